"""`oracle`: a deterministic offline stand-in for a strong teacher, answering from the photo's labels."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from globe.teachers.base import Request, Response, Sampling, Teacher

# Words in a title that suggest a recognisable, nameable place (the oracle teacher's localizability heuristic).
LANDMARK_WORDS = (
    "abbey", "basilica", "beach", "bridge", "castle", "cathedral", "church", "harbour", "harbor", "lake", "monument",
    "mosque", "mount", "mountain", "museum", "palace", "park", "plaza", "river", "square", "station", "statue",
    "street", "temple", "tower", "university", "valley",
)
# Words that do not make a title a caption (camera and gallery boilerplate).
_NOT_DESCRIPTIVE = {"image", "img", "dsc", "dscn", "cimg", "photo", "picture", "pic", "untitled", "jpg", "jpeg", "www", "com"}


class OracleTeacher(Teacher):
    """A deterministic offline STAND-IN for a strong teacher. NOT a model, and not what the paper does.

    It answers from the sample's metadata (`Request.meta`: title, country, admin1, city, lat/lon), so its answers are
    right by construction:

    - reasoning prompt: a short templated trace that lists clue words (those of the clue vocabulary found in the
      photo's title, then generic ones picked deterministically from the vocabulary by a hash of the id), says in
      fixed phrases what the title shows (it names the place, a landmark, describes the scene, or says nothing
      useful: the signals of the localizability judgement below), names the true city and country, then
      `<answer>` with them;
    - localizability prompt: `score = 0.1 + 0.3·[the title names the city, region or country] + 0.2·[the title has
      a landmark or clue word] + 0.3·[the title is a descriptive caption, not a camera file name] + 0.1·[a city is
      known]`, `localizable: yes` iff score >= 0.5. So captioned photos and named places are "localizable", photos
      titled "IMG_0042" are not: both labels occur, which the reward model needs. The heuristic is a proxy for
      "the photographer saw a subject worth naming", nothing more.

    Why it exists: the default profile's teacher is a tiny random VLM whose text is noise, which the filters rightly
    reject, leaving nothing for SFT / GRPO / the reward model to train on. With this teacher the smoke pipeline has
    data of the right shape. The paper profile uses Qwen2.5-VL-72B and InternVL3-78B behind an OpenAI-compatible vLLM
    endpoint instead.
    """

    is_oracle = True
    TEMPLATE = 4  # the version of the trace it writes (part of its identity, hence of the cache key)

    def __init__(self, name: str = "oracle", vocabulary: Sequence[str] | None = None, n_clues: int = 2,
                 sampling: Sampling = Sampling()):
        from globe.vocabulary import CLUE_VOCABULARY

        self.name, self.sampling, self.n_clues = name, sampling, int(n_clues)
        self.needs_image = False  # it reads the metadata only
        self.vocabulary = list(vocabulary or CLUE_VOCABULARY)

    def identity(self) -> dict:
        from globe.cache import cache_key

        return {"backend": "oracle", "template": self.TEMPLATE, "vocabulary": cache_key(self.vocabulary),
                "n_clues": self.n_clues}

    def _clues(self, rid: str, title: str) -> list[str]:
        from globe.vocabulary import find_clues

        found = find_clues(title, self.vocabulary)
        h = int(hashlib.sha256(rid.encode("utf-8")).hexdigest(), 16)
        pool = [c for c in self.vocabulary if c not in found]
        while len(found) < self.n_clues and pool:
            found.append(pool.pop(h % len(pool)))
            h //= 7
        return found

    @staticmethod
    def _place_named(title: str, meta: Mapping) -> bool:
        t = title.lower()
        return any(p and str(p).lower() in t for p in (meta.get("city"), meta.get("admin1"), meta.get("country")))

    @staticmethod
    def _descriptive(title: str) -> bool:
        """A caption in words, not a camera file name ("IMG_0042", "Image #12 (http://...)")."""
        t = re.sub(r"\(?https?://\S+\)?|\S*\d\S*", " ", title.lower())
        return len([w for w in re.findall(r"[a-z]{3,}", t) if w not in _NOT_DESCRIPTIVE]) >= 2

    def _signals(self, meta: Mapping) -> dict[str, bool]:
        """What the title shows: it names the place, it has a landmark or clue word, it is a descriptive caption;
        and whether a city is known."""
        from globe.vocabulary import find_clues

        title = str(meta.get("title") or "")
        words = set(re.findall(r"[a-z]+", title.lower()))
        return {"place": self._place_named(title, meta),
                "landmark": bool(words & set(LANDMARK_WORDS)) or bool(find_clues(title, self.vocabulary)),
                "caption": self._descriptive(title), "city": bool(meta.get("city"))}

    def localizability(self, meta: Mapping) -> float:
        """0.1 + 0.3·[title names the city, region or country] + 0.2·[title has a landmark or clue word]
        + 0.3·[title is a descriptive caption] + 0.1·[a city is known], capped at 1."""
        s = self._signals(meta)
        score = 0.1 + 0.3 * s["place"] + 0.2 * s["landmark"] + 0.3 * s["caption"] + 0.1 * s["city"]
        return round(min(score, 1.0), 2)

    def _reasoning(self, r: Request) -> str:
        """A short, templated trace: the clue list, what the caption shows (the signals its localizability judgement
        rests on, in fixed phrases), and the place.

        Templated on purpose: the default profile's tiny policy can learn a fixed structure within a few hundred SFT
        steps (free text such as a quoted caption it can only memorise), writes it well inside GRPO's completion
        budget, and the reward model finds its labels' reasons in the reasoning it reads."""
        m = r.meta
        s = self._signals(m)
        hints = [phrase for key, phrase in (("place", "The caption names the place."),
                                            ("landmark", "It mentions a landmark."),
                                            ("caption", "It describes the scene.")) if s[key]]
        country, city = m.get("country") or "", m.get("city") or ""
        place = ", ".join(p for p in (city, country) if p)  # the answer repeats it: a structure a small model can copy
        parts = [f"Clues: {', '.join(self._clues(r.id, str(m.get('title') or '')))}.",
                 *(hints or ["The caption says nothing useful."]),
                 f"This looks like {place or 'an unknown place'}."]
        return f"<think>{' '.join(parts)}</think>\n<answer>country: {country}\ncity: {city}</answer>"

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        from globe.prompts import LOCALIZABILITY_PROMPT

        out = []
        for r in requests:
            if r.prompt == LOCALIZABILITY_PROMPT:
                s = self.localizability(r.meta)
                text = f"localizable: {'yes' if s >= 0.5 else 'no'}\nscore: {s:.2f}"
            else:
                text = self._reasoning(r)
            out.append(Response(text=text, meta={"backend": "oracle"}))
        return out

"""Teacher backends. The HTTP backend talks to a real HTTP server on 127.0.0.1 started by the test (no patching)."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from globe.answer import parse_completion, parse_localizability
from globe.prompts import LOCALIZABILITY_PROMPT, REASONING_PROMPT
from globe.teachers import (
    ErrorBudgetExceeded,
    OpenAITeacher,
    Request,
    Sampling,
    TeacherError,
    make_teacher,
)

KEY = "sk-test-Zq81SECRETkey"


class FakeChatServer:
    """An OpenAI-style /chat/completions server. The prompt text picks the behaviour:

    `ok:<x>` answers `echo:<x>`; `slow:<x>` sleeps `slow_s` first; `flaky:<n>:<x>` answers 500 n times, then ok;
    `rate:<n>:<x>` answers 429 (Retry-After: 0.05) n times; `bad:<n>:<x>` answers malformed JSON n times;
    `dead:<x>` always 500; `client:<x>` always 400. Error bodies echo the Authorization header (a leaky server), so
    redaction is tested. It records the max number of requests in flight and the attempts per prompt.
    """

    def __init__(self, slow_s: float = 0.15):
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.attempts: dict[str, int] = {}
        self.auth: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep pytest output clean
                pass

            def _send(self, code: int, body: bytes, headers: dict | None = None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    auth = self.headers.get("Authorization", "")
                    server.auth.add(auth)
                    content = body["messages"][0]["content"]
                    assert content[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
                    prompt = content[1]["text"]
                    with server.lock:
                        n = server.attempts[prompt] = server.attempts.get(prompt, 0) + 1
                    kind, _, rest = prompt.partition(":")
                    leak = json.dumps({"error": f"upstream failure; your header was {auth}"}).encode()
                    if kind == "slow":
                        time.sleep(server.slow_s)
                    if kind in ("flaky", "rate", "bad"):
                        fails, _, rest = rest.partition(":")
                        if n <= int(fails):
                            if kind == "flaky":
                                return self._send(500, leak)
                            if kind == "rate":
                                return self._send(429, leak, {"Retry-After": "0.05"})
                            return self._send(200, b'{"choices": [ {"message": ')
                    if kind == "dead":
                        return self._send(500, leak)
                    if kind == "client":
                        return self._send(400, leak)
                    answer = {"model": body["model"], "usage": {"total_tokens": 3},
                              "choices": [{"message": {"role": "assistant", "content": f"echo:{rest}"}, "finish_reason": "stop"}]}
                    self._send(200, json.dumps(answer).encode())
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with FakeChatServer() as s:
        yield s


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("GLOBE_TEST_API_KEY", KEY)
    return "GLOBE_TEST_API_KEY"


IMG = Image.new("RGB", (8, 8), (200, 30, 30))


def reqs(prompts):
    return [Request(id=f"img{i}", image=IMG, prompt=p, sampling=Sampling(max_new_tokens=8)) for i, p in enumerate(prompts)]


def teacher(server, key_env, **kw):
    opts = dict(name="t", model="m", base_url=server.url, api_key_env=key_env, concurrency=3, timeout_s=5,
                max_retries=3, backoff_s=0.01, max_backoff_s=0.2, error_budget=5)
    opts.update(kw)
    return OpenAITeacher(**opts)


def test_concurrency_is_bounded_and_order_kept(server, key_env):
    t = teacher(server, key_env, concurrency=3)
    out = t.complete(reqs([f"slow:{i}" for i in range(12)]))
    assert [r.text for r in out] == [f"echo:{i}" for i in range(12)]
    assert all(r.error is None for r in out)
    assert server.max_in_flight == 3  # concurrent, and never more than the bound
    assert server.auth == {f"Bearer {KEY}"}


def test_retries_on_500_429_and_malformed_json(server, key_env):
    t = teacher(server, key_env)
    out = t.complete(reqs(["flaky:2:a", "rate:1:b", "bad:1:c", "ok:d"]))
    assert [r.text for r in out] == ["echo:a", "echo:b", "echo:c", "echo:d"]
    assert [r.meta["attempts"] for r in out] == [3, 2, 2, 1]
    assert server.attempts == {"flaky:2:a": 3, "rate:1:b": 2, "bad:1:c": 2, "ok:d": 1}
    assert t.n_retries == 4 and t.n_failed == 0


def test_retry_after_is_honoured(server, key_env):
    t = teacher(server, key_env, backoff_s=0.0)
    t0 = time.perf_counter()
    t.complete(reqs(["rate:2:x"]))
    assert time.perf_counter() - t0 >= 0.1  # two waits of Retry-After: 0.05 although backoff_s is 0


def test_client_errors_fail_without_retry_and_timeouts_are_errors(server, key_env):
    server.slow_s = 1.0
    t = teacher(server, key_env, timeout_s=0.1, max_retries=1)
    out = t.complete(reqs(["client:x", "slow:y", "ok:z"]))
    assert out[0].error.startswith("HTTP 400") and server.attempts["client:x"] == 1
    assert "Timeout" in out[1].error and server.attempts["slow:y"] == 2
    assert out[2].text == "echo:z"
    assert t.n_failed == 2


def test_error_budget_stops_the_run(server, key_env):
    t = teacher(server, key_env, max_retries=1, error_budget=2)
    with pytest.raises(ErrorBudgetExceeded) as e:
        t.complete(reqs(["dead:1", "dead:2", "dead:3", "dead:4", "ok:5"]))
    assert "error_budget=2" in str(e.value) and KEY not in str(e.value)
    # Within the budget, failures come back as errors and the run goes on.
    t2 = teacher(server, key_env, max_retries=0, error_budget=1)
    out = t2.complete(reqs(["dead:a", "ok:b"]))
    assert out[0].error and out[1].text == "echo:b"


def test_error_budget_hands_back_the_answers_already_completed(server, key_env):
    t = teacher(server, key_env, concurrency=1, max_retries=0, error_budget=0)
    with pytest.raises(ErrorBudgetExceeded) as e:
        t.complete(reqs(["ok:a", "dead:b", "ok:c"]))
    done = e.value.responses
    assert len(done) == 3 and done[0].text == "echo:a" and done[1].error and KEY not in done[1].error


def test_key_never_leaks(server, key_env, tmp_path, caplog):
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    from globe.cache import JsonlCache
    from globe.distill import query_teachers

    caplog.set_level(logging.DEBUG)
    t = make_teacher({"name": "api", "backend": "openai", "model": "m", "base_url": server.url, "api_key_env": key_env,
                      "concurrency": 2, "max_retries": 1, "backoff_s": 0.01, "error_budget": 100, "max_new_tokens": 8})
    # Every request fails with a body echoing the Authorization header; then a good endpoint fills the cache.
    ds = Dataset.from_dict({"id": ["a", "b"], "image": [IMG, IMG]},
                           features=Features({"id": Value("string"), "image": ImageFeature()}))
    import globe.distill.query as distill

    orig = distill.prompt_text
    try:
        distill.prompt_text = lambda kind: f"dead:{kind}"
        cache = JsonlCache(tmp_path / "cache.jsonl")
        stats = query_teachers([t], {"train": ds}, cache, batch_size=4)
        assert stats["errors"]["api"] == 4 and len(cache) == 0
        distill.prompt_text = lambda kind: f"ok:{kind}"
        stats = query_teachers([t], {"train": ds}, cache, batch_size=4)
        assert stats["errors"]["api"] == 0 and len(cache) == 4
        t.error_budget = 0
        distill.prompt_text = lambda kind: f"dead:again-{kind}"
        with pytest.raises(ErrorBudgetExceeded) as e:
            query_teachers([t], {"train": ds}, JsonlCache(tmp_path / "other.jsonl"), batch_size=4)
    finally:
        distill.prompt_text = orig
    assert f"Bearer {KEY}" in server.auth  # the key was used...
    assert "upstream failure" in caplog.text  # ...the leaky error bodies were logged...
    for text in (caplog.text, (tmp_path / "cache.jsonl").read_text(), str(e.value), repr(t), json.dumps(stats)):
        assert KEY not in text  # ...and the key appears nowhere
    assert "***" in caplog.text


def test_missing_key_and_bad_configs(monkeypatch):
    monkeypatch.delenv("GLOBE_NOPE_KEY", raising=False)
    with pytest.raises(TeacherError, match="GLOBE_NOPE_KEY"):
        make_teacher({"name": "x", "backend": "openai", "model": "m", "api_key_env": "GLOBE_NOPE_KEY"})
    with pytest.raises(TeacherError, match="api_key_env"):
        make_teacher({"name": "x", "backend": "openai", "model": "m", "api_key": "sk-inline"})
    with pytest.raises(TeacherError, match="unknown backend"):
        make_teacher({"name": "x", "backend": "carrier-pigeon"})
    with pytest.raises(TeacherError, match="bad options"):
        make_teacher({"name": "x", "backend": "oracle", "colour": "blue"})


def test_vllm_backend_needs_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(TeacherError, match="vllm is not installed"):
            make_teacher({"name": "v", "backend": "vllm", "model": "some/model"})
    else:  # pragma: no cover - GPU machines
        pytest.skip("vllm installed: the engine itself is exercised on GPU machines only")


def test_oracle_teacher_is_deterministic_and_right():
    t = make_teacher({"name": "oracle", "backend": "oracle"})
    metas = [
        {"title": "Notre-Dame cathedral, Paris", "country": "France", "admin1": "Île-de-France", "city": "Paris"},
        {"title": "IMG_0042", "country": "Japan", "admin1": "Shimane", "city": "Izumo"},
    ]
    rs = [Request(id=str(i), image=IMG, prompt=p, meta=m) for i, m in enumerate(metas) for p in (REASONING_PROMPT, LOCALIZABILITY_PROMPT)]
    out = t.complete(rs)
    assert [o.text for o in out] == [o.text for o in t.complete(rs)]
    first, second = parse_completion(out[0].text), parse_completion(out[2].text)
    assert first.format_ok and (first.country, first.city) == ("France", "Paris")
    assert "cathedral" in first.think.lower() and first.think.startswith("Clues:")
    assert (second.country, second.city) == ("Japan", "Izumo")
    # 0.1 + place named 0.3 + landmark 0.2 + caption 0.3 + city 0.1, and 0.1 + city 0.1 for a camera file name
    assert parse_localizability(out[1].text) == (True, 1.0)
    assert parse_localizability(out[3].text) == (False, 0.2)
    captioned = {"title": "Resort Lake at dusk", "country": "Norway", "city": "Stavanger"}  # 0.1 + 0.2 + 0.3 + 0.1
    assert t.localizability(captioned) == 0.7 and t.localizability({**captioned, "title": "Image #123 (http://x.com)"}) == 0.2


def test_local_teacher_batches_the_tiny_vlm(tiny_vlm_dir):
    t = make_teacher({"name": "tiny", "backend": "local", "model": str(tiny_vlm_dir), "batch_size": 3, "max_new_tokens": 4})
    assert t.sampling == Sampling(max_new_tokens=4, temperature=0.0, top_p=1.0, seed=0)
    out = t.complete(reqs([REASONING_PROMPT] * 4 + [LOCALIZABILITY_PROMPT]))
    assert len(out) == 5 and all(isinstance(o.text, str) and o.error is None for o in out)
    assert out[0].text == out[1].text  # greedy, same image and prompt


def test_a_key_pasted_as_the_variable_name_is_refused_and_never_shown():
    from globe.config import ParamsError
    from globe.distill import DistillParams

    key = "sk-proj-AbC123dEf456GhI789jKl012"
    with pytest.raises(TeacherError) as e:
        make_teacher({"name": "api", "backend": "openai", "model": "m", "api_key_env": key})
    assert key not in str(e.value) and "NAME of an environment variable" in str(e.value)
    teachers = [{"name": "api", "backend": "openai", "model": "m", "api_key_env": key}]
    with pytest.raises(ParamsError) as e:
        DistillParams.from_params({"teachers": teachers})
    assert key not in str(e.value) and "distill.teachers[0].api_key_env" in str(e.value)
    for not_a_name in ("abc-def", "has space", "x" * 80):
        with pytest.raises(ParamsError):
            DistillParams.from_params({"teachers": [{**teachers[0], "api_key_env": not_a_name}]})
    assert DistillParams.from_params({"teachers": [{**teachers[0], "api_key_env": "MY_KEY"}]}).teachers


def test_several_servers_share_the_requests_and_are_not_the_identity(key_env):
    with FakeChatServer() as a, FakeChatServer() as b:
        t = OpenAITeacher(name="t", model="m", base_url=[a.url, b.url], api_key_env=key_env, concurrency=2,
                          timeout_s=5, max_retries=1, backoff_s=0.01)
        out = t.complete(reqs([f"ok:{i}" for i in range(6)]))
        assert [r.text for r in out] == [f"echo:{i}" for i in range(6)]
        assert sum(a.attempts.values()) == 3 and sum(b.attempts.values()) == 3  # round robin
        single = OpenAITeacher(name="t", model="m", base_url=a.url, api_key_env=key_env)
        assert t.identity() == single.identity()  # replicas answer alike: one cache key whichever server answered
    with pytest.raises(TeacherError, match="base_url"):
        OpenAITeacher(name="t", model="m", base_url=[], api_key_env=None)


@pytest.fixture(scope="module")
def tiny_geoclip(tmp_path_factory):
    from globe.tiny import build_tiny_geoclip

    return build_tiny_geoclip(tmp_path_factory.mktemp("geoclip") / "geoclip", gallery_size=64)


def test_geoclip_teacher_gives_points_and_confidences(tiny_geoclip):
    from globe.teachers import GeoCLIPTeacher, parse_gps

    t = make_teacher({"name": "geoclip", "backend": "geoclip", "model": str(tiny_geoclip), "batch_size": 2})
    assert isinstance(t, GeoCLIPTeacher) and t.kinds == ("gps",)
    photos = [Image.new("RGB", (40 + 9 * i, 30), (20 * i, 90, 160)) for i in range(5)]
    out = t.complete([Request(id=str(i), image=im, prompt="") for i, im in enumerate(photos)] +
                     [Request(id="bad", image=b"not an image", prompt="")])
    points = [parse_gps(r.text) for r in out[:5]]
    assert all(p is not None and -90 <= p[0] <= 90 and 0 < p[2] <= 1 for p in points)
    assert out[5].error and out[5].text == ""  # a broken photo is its own error
    # batching does not change an answer
    one = make_teacher({"name": "geoclip", "backend": "geoclip", "model": str(tiny_geoclip), "batch_size": 1})
    assert [r.text for r in one.complete([Request(id="0", image=photos[0], prompt="")])] == [out[0].text]
    ident = t.identity()
    assert ident["backend"] == "geoclip" and ident["model_digest"] and ident["geoclip"]
    assert parse_gps("lat: 91\nlon: 0\nconfidence: 0.5") is None and parse_gps("nonsense") is None


def test_geoclip_answers_are_cached_and_resumed(tiny_geoclip, tmp_path):
    from datasets import Dataset
    from datasets import Image as ImageFeature

    from globe.cache import JsonlCache
    from globe.distill import query_teachers

    photos = [Image.new("RGB", (32, 32), (i * 80, 0, 0)) for i in range(3)]
    ds = Dataset.from_dict({"id": ["a", "b", "c"], "image": photos}).cast_column("image", ImageFeature())
    t = make_teacher({"name": "geoclip", "backend": "geoclip", "model": str(tiny_geoclip)})
    cache = JsonlCache(tmp_path / "c.jsonl")
    first = query_teachers([t], {"train": ds}, cache)
    again = query_teachers([t], {"train": ds}, JsonlCache(tmp_path / "c.jsonl"))
    assert first["asked"]["geoclip"] == 3 and again["asked"]["geoclip"] == 0 and again["cached"]["geoclip"] == 3

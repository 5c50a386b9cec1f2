"""The localizability reward model: readout, scorer robustness, endpoint client and server, training run."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from globe import reward_model as rm
from globe.config import ParamsError
from globe.images import fit_image, to_data_url
from globe.prompts import build_messages

SMALL = 28 * 28 * 16  # pixel budget for the tests: at most 16 merged patches per image


def _images(n: int, seed: int = 0, sizes=((56, 56), (84, 56), (60, 140))):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (*sizes[i % len(sizes)], 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def scorer(tiny_vlm_dir):
    return rm.LocalizabilityScorer(tiny_vlm_dir, batch_size=4, max_pixels=SMALL)


# ---------------------------------------------------------------------------------------------------------------------
# Config, readout, metrics


def test_config_from_params_rejects_unknown_keys_and_bad_values():
    cfg = rm.RewardModelParams.from_params({"steps": 3, "base_model": "some/model", "seed": 7})
    assert (cfg.steps, cfg.base_model, cfg.seed) == (3, "some/model", 7)
    with pytest.raises(ParamsError, match="lerning_rate"):
        rm.RewardModelParams.from_params({"lerning_rate": 1e-4, "base_model": "m"})
    with pytest.raises(ValueError, match="base_model"):
        rm.RewardModelParams.from_params({"base_model": ""})
    with pytest.raises(ValueError, match="eval_fraction"):
        rm.RewardModelParams.from_params({"eval_fraction": 1.0, "base_model": "m"})
    with pytest.raises(ParamsError, match="reward_model.steps: expected an integer"):
        rm.RewardModelParams.from_params({"steps": "many", "base_model": "m"})


def test_yes_no_ids_are_exactly_the_case_variants(scorer):
    tok = scorer.tokenizer
    yes, no = rm.yes_no_token_ids(tok)
    assert not set(yes) & set(no)
    for i in yes:
        assert tok.decode([i]).lstrip(" ").lower() == "yes"
    for i in no:
        assert tok.decode([i]).lstrip(" ").lower() == "no"
    # Every single-token spelling the tokenizer has is in the sets.
    for word, ids in (("yes", yes), ("no", no)):
        for variant in (word, word.capitalize(), word.upper(), " " + word, " " + word.capitalize()):
            enc = tok.encode(variant, add_special_tokens=False)
            if len(enc) == 1:
                assert enc[0] in ids, variant


def test_readout_equals_hand_computation_on_tiny_model_logits(scorer):
    import torch

    image = _images(1)[0]
    reasoning = "The signs are in Portuguese and the pavement is a black and white mosaic."
    prompt = rm.reward_prompt(reasoning)
    text = scorer.processor.apply_chat_template(build_messages(prompt), add_generation_prompt=True, tokenize=False)
    inputs = scorer.processor(text=[text], images=[fit_image(image, SMALL)], return_tensors="pt")
    with torch.no_grad():
        logits = scorer.model(**inputs).logits[0, -1].double().numpy()
    p = np.exp(logits - logits.max())
    p /= p.sum()
    p_yes, p_no = p[scorer.yes_ids].sum(), p[scorer.no_ids].sum()
    hand = p_yes / (p_yes + p_no)
    assert float(rm.yes_no_probabilities(torch.tensor(logits), scorer.yes_ids, scorer.no_ids)) == pytest.approx(hand, abs=1e-9)
    assert scorer.score([image], [reasoning])[0] == pytest.approx(hand, abs=1e-5)


def test_batched_scores_equal_one_by_one(scorer):
    images = _images(5, seed=1)
    reasonings = ["short", "", "a much longer reasoning about mountains and snow " * 5, "Yes", "no"]
    batched = scorer.score(images, reasonings)
    single = rm.LocalizabilityScorer(scorer.model, processor=scorer.processor, batch_size=1, max_pixels=SMALL)
    assert np.allclose(batched, single.score(images, reasonings), atol=1e-5)
    assert all(0.0 <= v <= 1.0 for v in batched)


def test_garbage_input_gives_unit_interval_or_counted_error(tiny_vlm_dir, scorer):
    from PIL import Image

    s = rm.LocalizabilityScorer(scorer.model, processor=scorer.processor, batch_size=4, max_pixels=SMALL,
                                max_reasoning_chars=500)
    good = _images(1)[0]
    cases = [
        (good, ""),  # empty reasoning
        (good, None),  # no reasoning
        (good, "x" * 200_000),  # huge text, truncated
        (good, "<|image_pad|><|im_end|><|vision_start|> {reasoning} \x00 \ud800"),  # special tokens, braces, junk
        (good, b"\xff\xfe bytes"),
        (good, [{"role": "assistant", "content": "a message list"}]),
        (Image.new("RGB", (1, 400)), "a sliver of an image"),
        (Image.new("L", (30, 30)), "greyscale"),
        (None, "no image"),
        ("not/an/image.jpg", "missing file"),
        (b"not image bytes", "corrupt bytes"),
        (12345, "not an image at all"),
    ]
    scores = s.score([c[0] for c in cases], [c[1] for c in cases])
    n_bad = 4
    assert all(0.0 <= v <= 1.0 for v in scores[:-n_bad])
    assert all(math.isnan(v) for v in scores[-n_bad:])
    assert s.stats["errors"] == n_bad and s.stats["errors_by_kind"] == {"bad_input": n_bad}
    assert s.stats["scored"] == len(cases) - n_bad and s.stats["truncated"] == 1

    strict = rm.LocalizabilityScorer(scorer.model, processor=scorer.processor, on_error="raise")
    with pytest.raises(rm.RewardModelError, match="no image"):
        strict.score([good, None], ["a", "b"])
    neutral = rm.LocalizabilityScorer(scorer.model, processor=scorer.processor, on_error="neutral", error_budget=5)
    assert neutral.score([good, None], ["a", "b"])[1] == 0.5 and neutral.stats["errors"] == 1
    budget = rm.LocalizabilityScorer(scorer.model, processor=scorer.processor, error_budget=1)
    assert math.isnan(budget.score([None], ["a"])[0])
    with pytest.raises(rm.RewardModelError, match="error budget of 1"):
        budget.score([None], ["b"])


def test_auc_and_ece_match_definitions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60), 1)  # rounding makes ties
    pairs = [(a, b) for a in s[y == 1] for b in s[y == 0]]
    brute = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert rm.roc_auc(y, s) == pytest.approx(brute)
    assert rm.roc_auc([1, 1], [0.2, 0.3]) is None
    # Two bins used: [0.1, 0.2) holds scores .1, .1 with labels 0, 1; [0.9, 1.0] holds .9, 1.0 with labels 1, 1.
    ece = rm.expected_calibration_error([0, 1, 1, 1], [0.1, 0.1, 0.9, 1.0])
    assert ece == pytest.approx(0.5 * abs(0.5 - 0.1) + 0.5 * abs(1.0 - 0.95))
    m = rm.classification_metrics([1, 0, 1], [0.9, 0.2, float("nan")])
    assert (m["n"], m["n_scored"], m["n_failed"], m["accuracy"]) == (3, 2, 1, 1.0)


def test_split_keeps_groups_together_and_stratifies():
    labels = [0, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 0]
    groups = ["a", "a", "b", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    train, held = rm.split_indices(labels, groups, 0.25, seed=3)
    assert sorted(train + held) == list(range(len(labels)))
    assert not {groups[i] for i in train} & {groups[i] for i in held}
    assert {labels[i] for i in held} == {0, 1} and {labels[i] for i in train} == {0, 1}
    assert rm.split_indices(labels, groups, 0.25, seed=3) == (train, held)
    from globe.reward_model.train import _oversample

    over = _oversample([0, 1, 2, 3, 4], [1, 0, 0, 0, 0], seed=0)
    assert sorted(over)[:5] == [0, 0, 0, 0, 1] and len(over) == 8


# ---------------------------------------------------------------------------------------------------------------------
# Endpoint client against a scripted local server


class _Scripted:
    """A fake OpenAI-compatible server: each request pops the next behaviour (the last one repeats)."""

    def __init__(self, behaviours):
        self.behaviours = list(behaviours)
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                script.requests.append(body)
                script.auth.append(self.headers.get("Authorization"))
                b = script.behaviours.pop(0) if len(script.behaviours) > 1 else script.behaviours[0]
                if b == "slow":
                    time.sleep(0.6)
                    b = "good"
                if b == "good":
                    top = [{"token": "yes", "logprob": -0.2}, {"token": " Yes", "logprob": -3.0},
                           {"token": "maybe", "logprob": -1.0}, {"token": "no", "logprob": -1.5}]
                    status, data = 200, {"choices": [{"logprobs": {"content": [{"token": "yes", "logprob": -0.2,
                                                                                  "top_logprobs": top}]}}]}
                elif b == "noyesno":
                    top = [{"token": "maybe", "logprob": -0.1}]
                    status, data = 200, {"choices": [{"logprobs": {"content": [{"token": "maybe", "logprob": -0.1,
                                                                                  "top_logprobs": top}]}}]}
                elif b == "nologprobs":
                    status, data = 200, {"choices": [{"message": {"content": "yes"}}]}
                else:
                    status, data = int(b), {"error": {"message": "scripted failure"}}
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(*behaviours):
        servers.append(_Scripted(behaviours))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


EXPECTED = (math.exp(-0.2) + math.exp(-3.0)) / (math.exp(-0.2) + math.exp(-3.0) + math.exp(-1.5))


def _client(url, **kw):
    kw.setdefault("timeout", 0.3)
    kw.setdefault("retries", 2)
    kw.setdefault("backoff", 0.01)
    return rm.EndpointScorer(url, "rm", **kw)


def test_endpoint_good_request_sends_openai_payload(scripted, monkeypatch, caplog):
    monkeypatch.setenv("GLOBE_RM_API_KEY", "sekret-key-123")
    srv = scripted("good")
    client = _client(srv.url)
    with caplog.at_level(logging.DEBUG):
        scores = client.score(_images(2), ["reasoning one", "two"])
    assert scores == pytest.approx([EXPECTED, EXPECTED])
    body = srv.requests[0]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20 and body["model"] == "rm"
    parts = body["messages"][0]["content"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1]["text"] in (rm.reward_prompt("reasoning one"), rm.reward_prompt("two"))
    assert srv.auth == ["Bearer sekret-key-123"] * 2
    assert "sekret-key-123" not in caplog.text and "sekret" not in repr(client)
    assert client.stats["scored"] == 2 and client.stats["errors"] == 0


def test_endpoint_slow_server_times_out_then_retry_succeeds(scripted):
    srv = scripted("slow", "good")
    client = _client(srv.url, max_workers=1)
    assert client.score(_images(1), ["r"]) == pytest.approx([EXPECTED])
    assert client.stats["timeouts"] == 1 and client.stats["retries"] == 1 and client.stats["errors"] == 0


def test_endpoint_failures_are_counted_not_zero(scripted):
    srv = scripted("500")
    client = _client(srv.url, error_budget=5)
    scores = client.score(_images(1), ["r"])
    assert math.isnan(scores[0])
    assert len(srv.requests) == 3 and client.stats["retries"] == 2
    assert client.stats["errors"] == 1 and client.stats["errors_by_kind"] == {"http_500": 1}

    bad = scripted("400")
    client = _client(bad.url, error_budget=5)
    assert math.isnan(client.score(_images(1), ["r"])[0])
    assert len(bad.requests) == 1 and client.stats["errors_by_kind"] == {"http_error": 1}  # a 4xx is not retried

    odd = scripted("nologprobs")
    client = _client(odd.url, error_budget=5)
    assert math.isnan(client.score(_images(1), ["r"])[0]) and client.stats["errors_by_kind"] == {"bad_response": 1}

    neither = scripted("noyesno")
    client = _client(neither.url, error_budget=5)
    assert math.isnan(client.score(_images(1), ["r"])[0]) and client.stats["errors_by_kind"] == {"no_yes_no": 1}

    ok = scripted("good")
    client = _client(ok.url, error_budget=5)
    assert math.isnan(client.score([None], ["r"])[0]) and client.stats["errors_by_kind"] == {"bad_input": 1}
    assert ok.requests == []


def test_endpoint_error_budget_exceeded_raises_clearly(scripted):
    srv = scripted("503")
    client = _client(srv.url, retries=0, error_budget=1, max_workers=1)
    with pytest.raises(rm.RewardModelError, match=r"2 items failed, over the error budget of 1"):
        client.score(_images(2), ["a", "b"])
    strict = _client(srv.url, retries=0, on_error="raise")
    with pytest.raises(rm.RewardModelError, match="http_503"):
        strict.score(_images(1), ["a"])
    # Nothing listening: connection errors are retried, then counted.
    dead = _client("http://127.0.0.1:9/v1", retries=1, error_budget=3)
    assert math.isnan(dead.score(_images(1), ["a"])[0]) and dead.stats["errors_by_kind"] == {"connection": 1}


# ---------------------------------------------------------------------------------------------------------------------
# Our server: round trip against the in-process scorer


def test_serve_round_trip_equals_in_process_scorer(scorer, monkeypatch):
    import httpx

    vocab = len(scorer.tokenizer)
    monkeypatch.setenv("TEST_RM_KEY", "k-987")
    server = rm.serve(scorer, "127.0.0.1", 0, block=False, max_top_logprobs=vocab, api_key_env="TEST_RM_KEY")
    try:
        images = _images(3, seed=4)
        reasonings = ["snow, pines and a wooden church", "", "tuk-tuks and Thai script on the signs"]
        expected = scorer.score(images, reasonings)
        # Every yes/no variant is among the top `vocab` logprobs, so the client's readout is exact.
        client = rm.EndpointScorer(server.url, rm.DEFAULT_MODEL_NAME, top_logprobs=vocab, api_key_env="TEST_RM_KEY")
        assert client.score(images, reasonings) == pytest.approx(expected, abs=1e-5)
        assert client.stats["errors"] == 0 and client.stats["one_sided"] == 0

        headers = {"Authorization": "Bearer k-987"}
        url = to_data_url(images[0], "PNG")
        body = {"model": rm.DEFAULT_MODEL_NAME, "max_tokens": 1, "logprobs": True, "top_logprobs": 5,
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                          {"type": "text", "text": rm.reward_prompt("x")}]}]}
        r = httpx.post(server.url + "/chat/completions", json=body, headers=headers)
        assert r.status_code == 200, r.text
        content = r.json()["choices"][0]["logprobs"]["content"][0]
        lps = [e["logprob"] for e in content["top_logprobs"]]
        assert len(lps) == 5 and lps == sorted(lps, reverse=True) and content["logprob"] == lps[0]
        assert r.json()["choices"][0]["message"]["content"] == content["token"]

        assert httpx.post(server.url + "/chat/completions", json=body).status_code == 401
        bad = json.loads(json.dumps(body))
        bad["messages"][0]["content"][0]["image_url"]["url"] = "data:image/png;base64,bm90IGFuIGltYWdl"
        assert httpx.post(server.url + "/chat/completions", json=bad, headers=headers).status_code == 400
        assert httpx.post(server.url + "/chat/completions", json={**body, "max_tokens": 5},
                          headers=headers).status_code == 400
        assert httpx.get(server.url + "/models").json()["data"][0]["id"] == rm.DEFAULT_MODEL_NAME
    finally:
        server.shutdown()


def test_server_refuses_to_run_open_unless_asked_and_on_loopback_only(scorer, monkeypatch):
    monkeypatch.delenv("TEST_RM_KEY", raising=False)
    with pytest.raises(rm.RewardModelError, match="no API key"):
        rm.serve(scorer, "127.0.0.1", 0, block=False, api_key_env="TEST_RM_KEY")
    with pytest.raises(rm.RewardModelError, match="loopback"):
        rm.serve(scorer, "0.0.0.0", 0, block=False, api_key_env="TEST_RM_KEY", allow_no_auth=True)
    server = rm.serve(scorer, "127.0.0.1", 0, block=False, api_key_env="TEST_RM_KEY", allow_no_auth=True)
    try:
        import httpx

        assert httpx.get(server.url + "/models").status_code == 200  # open, on loopback, because asked
    finally:
        server.shutdown()


def test_server_limits_and_keep_alive(scorer, monkeypatch, caplog):
    """Refused requests (401, 404, 413, oversized images) leave the kept-alive connection usable; a client that hangs
    up mid-request leaves no traceback."""
    import socket

    import httpx
    from PIL import Image

    monkeypatch.setenv("TEST_RM_KEY", "k-1")
    server = rm.serve(scorer, "127.0.0.1", 0, block=False, api_key_env="TEST_RM_KEY", max_body_bytes=200_000,
                      max_pixels=40_000, max_top_logprobs=5)
    try:
        ok_url = to_data_url(_images(1)[0], "PNG")
        big_url = to_data_url(Image.new("RGB", (400, 400), (9, 9, 9)), "PNG")  # 160,000 pixels > 40,000
        def body(url, model=rm.DEFAULT_MODEL_NAME):
            return {"model": model, "max_tokens": 1, "logprobs": True, "top_logprobs": 5, "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": rm.reward_prompt("x")}]}]}
        auth = {"Authorization": "Bearer k-1"}
        with caplog.at_level("DEBUG"), httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.post("/chat/completions", json=body(ok_url)).status_code == 401  # no key
            assert c.post("/chat/completions", json=body(ok_url), headers=auth).status_code == 200  # same connection
            assert c.post("/chat/completions", json=body(ok_url, "other"), headers=auth).status_code == 404
            r = c.post("/chat/completions", content=b"x" * 300_000, headers={**auth, "Content-Type": "application/json"})
            assert r.status_code == 413
            r = c.post("/chat/completions", json=body(big_url), headers=auth)
            assert r.status_code == 400 and "too_large" in r.text  # refused before decoding
            assert c.post("/chat/completions", json=body(ok_url), headers=auth).status_code == 200
            with socket.create_connection(("127.0.0.1", server.port)) as raw:  # hang up mid-body
                raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k-1\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"model\":")
            assert c.post("/chat/completions", json=body(ok_url), headers=auth).status_code == 200
        assert "Traceback" not in caplog.text and "BrokenPipe" not in caplog.text
        assert server.stats["http_401"] == 1 and server.stats["http_413"] == 1
    finally:
        server.shutdown()


def test_cli_has_serve_reward_model():
    from globe.cli import build_parser

    args = build_parser().parse_args(["serve-reward-model", "--model", "m", "--adapter", "a", "--port", "0"])
    assert (args.model, args.adapter, args.port, args.func.__name__) == ("m", "a", 0, "_cmd_serve_reward_model")


# ---------------------------------------------------------------------------------------------------------------------
# Training


@pytest.fixture(scope="module")
def trained(tiny_vlm_dir, tmp_path_factory):
    from datasets import Dataset, Features, Image, Value

    d = tmp_path_factory.mktemp("rm")
    images = _images(16, seed=5)
    rows = [
        {"id": f"im{i // 2}", "image": images[i], "label": i % 2, "score": 0.8 if i % 2 else 0.2, "teacher": "t",
         "reasoning": "The Eiffel tower and French signs." if i % 2 else "A white wall, nothing else."}
        for i in range(16)
    ]
    rows.append({"id": "bad-label", "image": images[0], "label": 2, "score": 0.5, "teacher": "t", "reasoning": "r"})
    rows.append({"id": "bad-image", "image": {"bytes": b"not an image", "path": None}, "label": 1, "score": 0.5,
                 "teacher": "t", "reasoning": "r"})
    features = Features(id=Value("string"), image=Image(), reasoning=Value("string"), label=Value("int64"),
                        score=Value("float64"), teacher=Value("string"))
    Dataset.from_list(rows, features=features).save_to_disk(str(d / "labels"))
    params = {"labels": str(d / "labels"), "out": str(d / "adapter"), "metrics": str(d / "metrics.json"), "steps": 2,
              "batch_size": 4, "learning_rate": 0.05, "eval_fraction": 0.25, "max_pixels": SMALL,
              "lora": {"r": 4, "alpha": 8, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]},
              "balance": "oversample", "base_model": str(tiny_vlm_dir), "seed": 0}
    metrics = rm.train_reward_model(rm.RewardModelParams.from_params(params))
    return d, metrics


def test_training_writes_adapter_and_metrics(trained):
    d, metrics = trained
    # The file holds what the call returns; the wall times go to the stage's run record (a rerun writes the same bytes).
    assert json.loads((d / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    from globe.progress import runs_dir

    assert json.loads((runs_dir() / "reward_model" / "timing.json").read_text())["train_s"] > 0
    assert (d / "adapter" / "adapter_config.json").is_file() and (d / "adapter" / "adapter_model.safetensors").is_file()
    assert not (d / "adapter" / "checkpoints").exists()
    assert json.loads((d / "adapter" / rm.SETTINGS_FILE).read_text())["max_pixels"] == SMALL
    n = metrics["n"]
    assert n["label_rows"] == 18 and n["usable"] == 16 and n["train"] + n["eval"] == 16
    assert n["skipped"] == {"bad_label": 1, "bad_image:corrupt_image": 1}
    balance = metrics["class_balance"]
    assert sum(balance["train"].values()) == n["train"] and sum(balance["eval"].values()) == n["eval"]
    assert balance["eval"]["yes"] >= 1 and balance["eval"]["no"] >= 1
    over = balance["train_oversampled"]
    assert over["yes"] == over["no"] == max(balance["train"].values())
    ev = metrics["eval"]
    assert ev["n"] == ev["n_scored"] == n["eval"] and 0 <= ev["accuracy"] <= 1 and 0 <= ev["ece"] <= 1
    assert 0 <= ev["roc_auc"] <= 1
    assert metrics["train"]["steps"] == 2 and "timing" not in metrics


def test_trained_adapter_scores_and_shares_weights_with_policy(trained, tiny_vlm_dir, scorer):
    from globe.models import load_vlm, lora_settings

    d, _ = trained
    images, reasonings = _images(3, seed=9), ["French signs", "", "a wall"]
    standalone = rm.LocalizabilityScorer(tiny_vlm_dir, d / "adapter", batch_size=4)
    assert standalone.max_pixels == SMALL  # read from the adapter's settings
    ref = standalone.score(images, reasonings)
    assert all(0 <= v <= 1 for v in ref)
    alone = rm.LocalizabilityScorer(d / "adapter")  # the reward-model dir alone: base model from its settings
    assert alone.score(images, reasonings) == pytest.approx(ref, abs=1e-6)
    assert not np.allclose(ref, scorer.score(images, reasonings), atol=1e-6)  # the adapter is applied

    policy, processor = load_vlm(tiny_vlm_dir, training=True, lora=lora_settings(r=4, alpha=8))
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    shared = rm.LocalizabilityScorer(policy, d / "adapter", processor=processor)
    assert shared.score(images, reasonings) == pytest.approx(ref, abs=1e-5)
    # The policy is left as it was: its adapter active and trainable, in train mode; the reward model frozen.
    assert policy.active_adapter == "default" and policy.training
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == trainable
    with pytest.raises(TypeError, match="PeftModel"):
        rm.LocalizabilityScorer(scorer.model, d / "adapter", processor=scorer.processor)


def test_training_chooses_the_backend_before_trl_is_imported(tmp_path):
    """On the unsloth backend, unsloth must be imported before TRL or its SFTTrainer stays unpatched: the reward
    model picks its backend first (select_backend imports unsloth), and nothing imports TRL before that."""
    code = f"""
import sys
import globe.models, globe.reward_model as rm
seen = []
def stop(prefer="auto"):
    seen.append("trl" in sys.modules)
    raise SystemExit(0 if not seen[0] else 3)
globe.models.select_backend = stop
rm.train_reward_model({{"labels": {str(tmp_path / 'labels')!r}, "base_model": "m", "out": {str(tmp_path / 'out')!r}}})
"""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------------------
# GLOBE's official input and readout


def test_official_top5_readout_is_exact():
    top = [{"token": "Yes", "logprob": math.log(0.5)}, {"token": " yes", "logprob": math.log(0.2)},
           {"token": "NO", "logprob": math.log(0.1)}, {"token": "yEs", "logprob": math.log(0.1)}]
    value, both = rm.yes_no_from_top_logprobs(top, exact=True)
    assert value == pytest.approx(0.5 / 0.6) and both  # " yes" and "yEs" are not GLOBE's tokens
    assert rm.yes_no_from_top_logprobs(top)[0] == pytest.approx(0.8 / 0.9)  # the project's lenient match
    assert rm.yes_no_from_top_logprobs([{"token": "maybe", "logprob": -0.1}], exact=True) == (0.0, False)
    with pytest.raises(rm.NoYesNoError):
        rm.yes_no_from_top_logprobs([{"token": "maybe", "logprob": -0.1}])


def test_official_messages_hold_the_system_prompt_and_the_whole_completion(tiny_vlm_dir):
    from globe.prompts import GLOBE_RM_SYSTEM_PROMPT
    from globe.reward_model.readout import reward_messages

    completion = "<think>Red buses.</think><answer>country: UK\ncity: London</answer>"
    msgs = reward_messages(completion, "official")
    assert msgs[0] == {"role": "system", "content": [{"type": "text", "text": GLOBE_RM_SYSTEM_PROMPT}]}
    assert msgs[1]["content"] == [{"type": "image"}, {"type": "text", "text": completion}]
    assert reward_messages("r")[0]["role"] == "user" and len(reward_messages("r")) == 1


def test_official_scorer_reads_top5_and_takes_completions(tiny_vlm_dir):
    from globe.reward_model.readout import top5_exact_probability

    official = rm.LocalizabilityScorer(tiny_vlm_dir, batch_size=4, max_pixels=SMALL, input_format="official",
                                       readout="top5")
    assert official.input_text == "completion"
    images, texts = _images(3), ["<think>a</think><answer>country: X\ncity: Y</answer>", "b", ""]
    scores = official.score(images, texts)
    rows = official.logprobs([fit_image(im, SMALL) for im in images], texts)
    assert scores == pytest.approx([top5_exact_probability(r, official.tokenizer)[0] for r in rows])
    assert all(0.0 <= s <= 1.0 for s in scores) and official.stats["errors"] == 0


def test_endpoint_official_request(scripted):
    from globe.prompts import GLOBE_RM_SYSTEM_PROMPT

    srv = scripted("good")
    client = _client(srv.url, input_format="official", readout="top5", top_logprobs=20)
    completion = "<think>Red buses.</think><answer>country: UK\ncity: London</answer>"
    (score,) = client.score(_images(1), [completion])
    body = srv.requests[0]
    assert body["top_logprobs"] == 5  # GLOBE's readout asks for the top 5
    assert body["messages"][0] == {"role": "system", "content": [{"type": "text", "text": GLOBE_RM_SYSTEM_PROMPT}]}
    user = body["messages"][1]["content"]
    assert user[0]["image_url"]["url"].startswith("data:image/png;base64,") and user[1]["text"] == completion
    # the scripted top list: "yes" -0.2, " Yes" -3.0 (not exact), "no" -1.5
    assert score == pytest.approx(math.exp(-0.2) / (math.exp(-0.2) + math.exp(-1.5)))
    assert client.input_text == "completion"

"""Class embeddings against the golden bundle, the embeddings cache, and `segcli vocab`; segcli's CLIP
tokenizer and text tower (segcli.vocab.clip_text) against open_clip's.

The tests that import open_clip carry `ON_OPEN_CLIP` (the xdist group "dynamo", tests/conftest.py):
under `--dist loadgroup` one xdist worker pays that import (1.7 s, and a heap twice as large), not
every worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from segcli.commands.vocab import app as vocab_app
from segcli.errors import InputNotFoundError, UsageError, VocabularyError, WeightsError
from segcli.vocab import cache, clip_text, load_embeddings, text
from segcli.vocab.parse import Vocabulary, from_official, parse_vocab

ON_OPEN_CLIP = pytest.mark.xdist_group("dynamo")  # see tests/conftest.py
# what `import open_clip` brings in, and embedding text must not
HEAVY_MODULES = ("open_clip", "torchvision", "timm", "torch._dynamo")


class Arrays:
    """Just the text arrays of a bundle (np.load is lazy per member; the whole outputs.npz is big)."""

    def __init__(self, bundle):
        self.path, self.config = bundle.path, bundle.config
        with np.load(bundle.path / "inputs.npz") as f:
            self.inputs = {k: f[k] for k in ("text_tokens", "text_descriptions")}
        with np.load(bundle.path / "outputs.npz") as f:
            self.outputs = {k: f[k] for k in ("text_features", "cls_embed_file", "cls_embed_buffer")}


@pytest.fixture(scope="module")
def golden(bundle):
    classes = bundle.config["classes"]
    vocab = from_official(classes["things"], classes["stuff"])
    source = text.text_source_from_bundle(bundle.path)
    tower = text.build_text_tower(source)
    return Arrays(bundle), vocab, source, tower


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGCLI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_vocabulary_from_config(golden):
    bundle, vocab, source, _ = golden
    classes = bundle.config["classes"]
    assert len(vocab) == classes["num_classes"]
    assert vocab.num_things == classes["num_things_classes"]
    assert vocab.max_synonyms == classes["cls_embed_file_shape"][1]
    assert list(source.templates) == classes["templates"]
    assert source.embed_dim == bundle.config["text_tower"]["embed_dim"]


def test_descriptions_and_tokens(golden):
    bundle, vocab, source, tower = golden
    descriptions = text.build_descriptions(vocab, source.templates)
    assert descriptions == [str(s) for s in bundle.inputs["text_descriptions"]]
    tokens = tower.tokenize(descriptions)
    assert tokens.dtype == torch.int64
    np.testing.assert_array_equal(tokens.numpy(), bundle.inputs["text_tokens"])


def test_text_features(golden):
    bundle, vocab, source, tower = golden
    expected = bundle.outputs["text_features"]
    from_tokens = tower.encode_tokens(torch.from_numpy(bundle.inputs["text_tokens"]))
    np.testing.assert_allclose(from_tokens.numpy(), expected, atol=1e-5, rtol=1e-5)
    # batching must not matter
    batched = tower.encode(text.build_descriptions(vocab, source.templates), batch_size=50)
    np.testing.assert_allclose(batched.numpy(), expected, atol=1e-5, rtol=1e-5)


def test_class_embeddings_match_golden(golden):
    bundle, vocab, source, tower = golden
    emb = text.class_embeddings(vocab, tower, source.templates)
    assert emb.dtype == torch.float32
    assert tuple(emb.shape) == tuple(bundle.config["classes"]["cls_embed_file_shape"])
    np.testing.assert_allclose(emb.numpy(), bundle.outputs["cls_embed_file"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(emb.shape[:2]), atol=1e-5, rtol=0)
    # the head's buffer: zero background prototype appended, permuted to (D, K+1, P)
    buffer = torch.cat([emb, emb.new_zeros(1, *emb.shape[1:])]).permute(2, 0, 1)
    np.testing.assert_allclose(buffer.numpy(), bundle.outputs["cls_embed_buffer"], atol=1e-5, rtol=1e-5)


def test_padding_repeats_first_synonym(golden):
    _, _, source, tower = golden
    v = parse_vocab("dog|puppy|hound,car")
    emb = text.class_embeddings(v, tower, source.templates[:2])
    assert emb.shape[:2] == (2, 3)
    torch.testing.assert_close(emb[1, 1], emb[1, 0], rtol=0, atol=0)
    torch.testing.assert_close(emb[1, 2], emb[1, 0], rtol=0, atol=0)
    assert not torch.allclose(emb[0, 1], emb[0, 0])


def test_cache_hit_skips_text_tower(golden, home, monkeypatch):
    bundle, vocab, source, _ = golden
    first, hit = cache.get_class_embeddings(vocab, source)
    assert not hit
    files = list((home / "cache" / "embeddings").glob("*.safetensors"))
    assert len(files) == 1

    def no_tower(*args, **kwargs):
        raise AssertionError("the text tower must not be built on a cache hit")

    monkeypatch.setattr(text, "build_text_tower", no_tower)
    second, hit = cache.get_class_embeddings(vocab, source)
    assert hit
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    np.testing.assert_allclose(second.numpy(), bundle.outputs["cls_embed_file"], atol=1e-5)
    # a different vocabulary or template list is a miss (and would need the tower)
    with pytest.raises(AssertionError, match="must not be built"):
        cache.get_class_embeddings(parse_vocab("dog,cat"), source)
    with pytest.raises(AssertionError, match="must not be built"):
        cache.get_class_embeddings(vocab, source, templates=("a {}.",))
    # the thing/stuff split does not change the embeddings, so it shares the entry
    regrouped = Vocabulary(vocab.classes, num_things=0)
    assert cache.get_class_embeddings(regrouped, source)[1]


def test_cache_off_and_damaged_entry(golden, home):
    _, vocab, source, _ = golden
    emb, hit = cache.get_class_embeddings(vocab, source, cache=False)
    assert not hit and not (home / "cache" / "embeddings").exists()
    cache.get_class_embeddings(vocab, source)
    entry = next((home / "cache" / "embeddings").glob("*.safetensors"))
    entry.write_bytes(b"garbage")
    again, hit = cache.get_class_embeddings(vocab, source)
    assert not hit
    torch.testing.assert_close(again, emb)


def test_bad_text_source(tmp_path, bundle):
    with pytest.raises(WeightsError, match="not a text-tower folder: config.json is missing"):
        text.text_source_from_bundle(tmp_path)
    # a checkpoint file whose text keys do not fit the config is refused with a clear message
    wrong = tmp_path / "tiny.bin"
    torch.save({"token_embedding.weight": torch.zeros(3, 3)}, wrong)
    source = text.text_source_from_bundle(bundle.path)
    with pytest.raises(WeightsError, match="do not match the config"):
        text.build_text_tower(text.TextSource("x", wrong, source.text_cfg, source.embed_dim))


def test_full_clip_checkpoint_keys_are_picked(tmp_path, golden):
    """A CLIP checkpoint file (visual.* + text keys, torch pickle, under state_dict/module.) works."""
    _, vocab, source, tower = golden
    state = {f"module.{k}": v for k, v in tower.text.state_dict().items()}
    state["module.visual.trunk.stem.0.weight"] = torch.zeros(2)
    state["module.logit_scale"] = torch.tensor(4.6)
    ckpt = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"state_dict": state}, ckpt)
    other = text.build_text_tower(text.TextSource("ckpt", ckpt, source.text_cfg, source.embed_dim))
    torch.testing.assert_close(text.class_embeddings(vocab, other, source.templates[:3]),
                               text.class_embeddings(vocab, tower, source.templates[:3]), rtol=0, atol=0)


def test_resolve_text_source_registry_errors(monkeypatch, home):
    with pytest.raises(WeightsError, match="unknown weights name"):
        text.resolve_text_source("nope")
    with pytest.raises(WeightsError, match="segcli weights pull clip-convnext-large-d-320$"):
        text.resolve_text_source("omg-seg-convl")
    with pytest.raises(UsageError, match="no single CLIP"):
        text.resolve_text_source("omg-seg-convl-head")
    with pytest.raises(WeightsError, match="weights not found: nowhere/clip.bin"):
        text.resolve_text_source("nowhere/clip.bin")


def test_cli_embed_and_list(golden, home, tmp_path):
    bundle, vocab, _, _ = golden
    runner = CliRunner()
    out = tmp_path / "emb.safetensors"
    args = ["embed", "--weights", str(bundle.path), "-o", str(out)]
    classes = bundle.config["classes"]
    vocab_file = tmp_path / "v.txt"
    vocab_file.write_text("\n".join(c.replace(",", "|") for c in classes["things"]) + "\n" +
                          "\n".join("stuff:" + c.replace(",", "|") for c in classes["stuff"]) + "\n")
    result = runner.invoke(vocab_app, [*args, "--vocab-file", str(vocab_file)])
    assert result.exit_code == 0, result.output
    assert "computed" in result.stderr and result.stdout == ""
    loaded, emb = load_embeddings(out, embed_dim=bundle.config["text_tower"]["embed_dim"])
    assert loaded.classes == vocab.classes and loaded.num_things == vocab.num_things
    np.testing.assert_allclose(emb.numpy(), bundle.outputs["cls_embed_file"], atol=1e-5)
    k = len(vocab)
    assert f"{k} classes ({vocab.num_things} things, {vocab.num_stuff} stuff)" in result.stderr
    result = runner.invoke(vocab_app, ["show", "--embeddings", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{k} classes" in result.stderr and vocab.classes[0][0] in result.stdout

    result = runner.invoke(vocab_app, [*args, "--vocab-file", str(vocab_file)])
    assert result.exit_code == 0 and "from cache" in result.stderr

    result = runner.invoke(vocab_app, ["embed", "--weights", str(bundle.path), "-o", str(out),
                                       "--vocab", "dog", "--dataset", "coco"])
    assert isinstance(result.exception, UsageError)

    result = runner.invoke(vocab_app, ["list"])
    assert result.exit_code == 0 and "cityscapes" in result.stdout and "133" in result.stdout
    result = runner.invoke(vocab_app, ["show", "--vocab", "dog|puppy,stuff:sky", "--seen"])
    assert result.exit_code == 0 and "puppy" in result.stdout and "stuff" in result.stdout
    assert "2 classes (1 thing, 1 stuff)" in " ".join(result.stdout.split())  # the title may wrap

    one = tmp_path / "one.safetensors"
    result = runner.invoke(vocab_app, ["embed", "--weights", str(bundle.path), "-o", str(one), "--vocab", "dog"])
    assert result.exit_code == 0, result.output
    assert "1 class (1 thing, 0 stuff), 1 synonym slot," in result.stderr


@ON_OPEN_CLIP
def test_tower_equals_open_clip_encode_text(golden):
    """Our tower is open_clip's CLIP.encode_text(normalize=False) with the same text keys."""
    import open_clip

    arrays, _, source, tower = golden
    clip = open_clip.model.CLIP(
        embed_dim=source.embed_dim,
        vision_cfg={"layers": 1, "width": 32, "head_width": 32, "patch_size": 16, "image_size": 32},
        text_cfg=source.text_cfg,
    ).eval()
    text_keys = {k for k in clip.state_dict() if not k.startswith("visual.") and k != "logit_scale"}
    assert text_keys == set(tower.text.state_dict())
    missing, unexpected = clip.load_state_dict(tower.text.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("visual.") or k == "logit_scale" for k in missing)
    tokens = torch.from_numpy(arrays.inputs["text_tokens"][:20])
    with torch.no_grad():
        torch.testing.assert_close(tower.encode_tokens(tokens), clip.encode_text(tokens, normalize=False),
                                   rtol=0, atol=0)


# ---- segcli's CLIP tokenizer and text tower against open_clip's -------------------------------------

HARD_SENTENCES = [
    "",
    " ",
    "a photo of a Café in Zürich, naïve façade",
    "e\u0301le\u0300ve",  # combining accents
    "日本語のテキストと中文字符",
    "한국어 문장",
    "Привет, мир! Ελληνικά ΣΟΦΙΑ",
    "İstanbul straße ǅ",  # lower case that changes length
    "dog 🐶 and car 🚗, family 👩‍👩‍👧 ✨",
    "Tom &amp; Jerry &lt;b&gt;bold&lt;/b&gt; &amp;amp; &#39;quoted&#39; &quot;x&quot; &nbsp;",
    "mojibake: cafÃ© and â€œquotesâ€\x9d",
    "MiXeD CaSe WORDS and CamelCaseWords",
    "don't it's we're they've I'm you'll he'd DON'T IT'S",
    "hello,world;foo:bar!!! ...??? (parens) [brackets] {braces} a/b\\c @#$%^&*_+=~`|<>",
    "numbers 1234 3.14 1,000,000 2nd 10x",
    "  extra\t\twhite \n\n space\r\n and\u00a0nbsp\u2003em  ",
    "traffic light|stop sign, fire-hydrant_pole",
    "<start_of_text> inside <end_of_text> and <START_OF_TEXT>",
    "supercalifragilisticexpialidocious" * 8,
    " ".join(f"word{i} and more" for i in range(60)),  # longer than 77 tokens: truncated
    "x" * 1000,
]


def _all_dataset_sentences() -> list[str]:
    """Every class name and synonym of every built-in dataset list, alone and in every template."""
    from segcli.vocab.datasets import dataset_names, dataset_vocabulary, training_vocabulary

    names = {synonym for name in dataset_names() for synonyms in dataset_vocabulary(name).classes
             for synonym in synonyms}
    names |= {synonym for synonyms in training_vocabulary().classes for synonym in synonyms}
    templates = set(text.VILD_TEMPLATES) | {"a photo of a {}.", "There is a {} in the scene"}
    return sorted(names | {template.format(name) for name in names for template in templates})


@ON_OPEN_CLIP
def test_tokenizer_matches_open_clip_on_every_dataset_vocabulary():
    from open_clip.tokenizer import SimpleTokenizer

    sentences = _all_dataset_sentences()
    assert len(sentences) > 9000  # 620 names, 15 templates
    ours = clip_text.CLIPTokenizer(context_length=77)(sentences)
    assert ours.dtype == torch.int64 and ours.shape == (len(sentences), 77)
    assert torch.equal(ours, SimpleTokenizer(context_length=77)(sentences))


@ON_OPEN_CLIP
@pytest.mark.parametrize("context_length", [77, 16])
def test_tokenizer_matches_open_clip_on_hard_cases(context_length):
    from open_clip.tokenizer import SimpleTokenizer

    ours = clip_text.CLIPTokenizer(context_length=context_length)
    theirs = SimpleTokenizer(context_length=context_length)
    tokens = ours(HARD_SENTENCES)
    assert torch.equal(tokens, theirs(HARD_SENTENCES))
    for sentence in HARD_SENTENCES:  # one at a time, and the plain encoding too
        assert torch.equal(ours(sentence), theirs(sentence)), sentence
        assert ours.encode(sentence) == theirs.encode(sentence), sentence
    assert (ours.sot_token_id, ours.eot_token_id, ours.vocab_size) == (49406, 49407, 49408)
    empty, long = tokens[0].tolist(), tokens[-2].tolist()
    assert empty[:3] == [49406, 49407, 0]
    assert long[-1] == 49407 and 0 not in long  # truncated: full, the end token last
    assert ours([]).shape == (0, context_length)


def _tower_tokens(context_length: int) -> torch.Tensor:
    """Tokenised sentences (the end token the largest id of each row) plus rows of random ids."""
    sentences = ["a photo of a dog.", "There is a large traffic light in the scene.", "", HARD_SENTENCES[4]]
    tokens = clip_text.CLIPTokenizer(context_length)(sentences)
    generator = torch.Generator().manual_seed(0)
    random_rows = torch.randint(0, 49406, (3, context_length), generator=generator)
    random_rows[:, 5] = 49407
    return torch.cat([tokens, random_rows])


TOWER_SIZES = [
    # the golden bundle's size; and a deeper one with an odd head count (nn.MultiheadAttention's
    # slow path), another MLP ratio and a shorter context
    ({"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}, 48),
    ({"context_length": 20, "vocab_size": 49408, "width": 48, "heads": 3, "layers": 3, "mlp_ratio": 2.5}, 24),
]


@ON_OPEN_CLIP
@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quick_gelu"])
@pytest.mark.parametrize("text_cfg,embed_dim", TOWER_SIZES, ids=["w32", "w48"])
def test_tower_equals_open_clip_text_tower(text_cfg, embed_dim, quick_gelu):
    """Same seed, same random weights (same draws in the same order); same weights, identical
    features: with and without autograd, and through TextTower (built empty, then loaded)."""
    from open_clip.model import _build_text_tower

    config = clip_text.text_tower_config(text_cfg, embed_dim, quick_gelu)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        theirs = _build_text_tower(embed_dim, dict(text_cfg), quick_gelu=quick_gelu).eval()
        torch.manual_seed(7)
        ours = clip_text.CLIPTextTransformer(config).eval()
    their_state, our_state = theirs.state_dict(), ours.state_dict()
    assert list(our_state) == list(their_state)
    for key, value in their_state.items():
        assert torch.equal(our_state[key], value), key
    assert "attn_mask" not in our_state and torch.equal(ours.attn_mask, theirs.attn_mask)
    activations = [type(tower.transformer.resblocks[0].mlp.gelu).__name__ for tower in (ours, theirs)]
    assert activations == 2 * ["QuickGELU" if quick_gelu else "GELU"]

    tokens = _tower_tokens(config.context_length)
    with torch.no_grad():
        expected = theirs(tokens)
        assert torch.equal(ours(tokens), expected)
    assert torch.equal(ours(tokens).detach(), theirs(tokens).detach())  # the autograd path of attention
    tower = text.TextTower(text_cfg, embed_dim, quick_gelu)
    tower.load_weights(their_state)
    assert torch.equal(tower.eval().encode_tokens(tokens), expected)


# open_clip 3.3 CLIPTextCfg settings that change the computation, at a value other than the default
UNSUPPORTED_SETTINGS = [
    ("pool_type", "eos"), ("pool_type", "first"), ("proj_type", "none"), ("proj_bias", True),
    ("embed_cls", True), ("no_causal_mask", True), ("ls_init_value", 1e-5), ("norm_kwargs", {"eps": 1e-6}),
    ("act_kwargs", {"approximate": "tanh"}), ("block_type", "custom"), ("qk_norm", True),
    ("scaled_cosine_attn", True), ("scale_heads", True), ("scale_attn_inner", True), ("scale_attn", True),
    ("scale_fc", True), ("tokenizer_kwargs", {"clean": "canonicalize"}), ("hf_model_name", "roberta-base"),
    ("hf_tokenizer_name", "bert-base-uncased"), ("no_such_setting", 1), ("width", 0), ("layers", 2.5),
    ("heads", 5), ("mlp_ratio", "4"),
]
SMALL_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


@pytest.mark.parametrize("key,value", UNSUPPORTED_SETTINGS, ids=[f"{k}={v}" for k, v in UNSUPPORTED_SETTINGS])
def test_unsupported_text_cfg_is_refused(key, value):
    with pytest.raises(WeightsError) as info:
        text.TextTower({**SMALL_CFG, key: value}, 32)
    assert key in str(info.value) and "\n" not in str(info.value)


def test_default_valued_text_cfg_is_accepted():
    """Settings at open_clip's defaults (or without effect on this tower) build the standard tower."""
    plain = clip_text.text_tower_config(SMALL_CFG, 32)
    same = {"pool_type": "argmax", "proj_type": "linear", "proj_bias": False, "embed_cls": False,
            "no_causal_mask": False, "ls_init_value": None, "norm_kwargs": {}, "act_kwargs": None,
            "block_type": "default", "qk_norm": False, "tokenizer_kwargs": {}, "hf_model_name": None,
            "hf_tokenizer_name": "", "pad_id": 1, "eos_id": 3, "output_tokens": True, "final_ln_after_pool": True,
            "width": 32.0, "mlp_ratio": 4}
    assert clip_text.text_tower_config({**SMALL_CFG, **same}, 32.0) == plain
    assert plain == clip_text.TextTowerConfig(width=32, heads=2, layers=1, embed_dim=32)


def test_unsupported_text_cfg_through_the_cli(model_dir, tmp_path, cli, monkeypatch):
    import shutil
    from pathlib import Path

    monkeypatch.setenv("SEGCLI_HOME", str(tmp_path / "home"))
    folder = tmp_path / "eos_model"
    folder.mkdir()
    shutil.copy(Path(model_dir) / "text_tower.safetensors", folder)
    config = json.loads((Path(model_dir) / "config.json").read_text())
    config["text_tower"]["open_clip_text_cfg"]["pool_type"] = "eos"
    (folder / "config.json").write_text(json.dumps(config))
    code, out, err = cli(["vocab", "embed", "--weights", folder, "--vocab", "dog", "-o", tmp_path / "e.safetensors"])
    assert code == WeightsError.exit_code and out == ""
    assert "pool_type='eos' is not supported" in err and len(err.strip().splitlines()) == 1


@ON_OPEN_CLIP
def test_open_clip_text_cfg_defaults_are_accepted():
    """Every field of open_clip's CLIPTextCfg is known, and all its defaults build the standard tower."""
    import dataclasses

    from open_clip.model import CLIPTextCfg

    defaults = dataclasses.asdict(CLIPTextCfg())
    assert clip_text.text_tower_config(defaults, 512) == clip_text.TextTowerConfig()


@ON_OPEN_CLIP
def test_built_in_open_clip_model_configs_match_open_clip(tmp_path):
    import open_clip

    from segcli.model.config import OPEN_CLIP_CONVNEXT_MODELS, backbone_from_open_clip, open_clip_model_config

    assert {"convnext_large_d_320", "convnext_xxlarge"} <= set(OPEN_CLIP_CONVNEXT_MODELS)
    for name in OPEN_CLIP_CONVNEXT_MODELS:
        ours, theirs = open_clip_model_config(name), open_clip.get_model_config(name)
        assert ours["embed_dim"] == theirs["embed_dim"], name
        assert ours["text_cfg"] == theirs["text_cfg"], name
        assert ours["vision_cfg"]["timm_model_name"] == theirs["vision_cfg"]["timm_model_name"], name
        assert ours["vision_cfg"]["timm_proj"] == theirs["vision_cfg"].get("timm_proj", "linear"), name
        assert ours["quick_gelu"] == theirs.get("quick_gelu", False), name
        assert backbone_from_open_clip(name) == backbone_from_open_clip(theirs), name
    # another open_clip model is looked up in open_clip itself
    assert open_clip_model_config("RN50") == open_clip.get_model_config("RN50")
    source = text.text_source_from_open_clip("ViT-B-32-quickgelu", tmp_path / "x.bin")
    assert source.quick_gelu and source.text_cfg["width"] == 512
    with pytest.raises(WeightsError, match="no model config"):
        text.text_source_from_open_clip("no_such_model", tmp_path / "x.bin")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        backbone_from_open_clip("no_such_model")


_EMBED_AND_LIST_MODULES = """
import json, sys
from segcli.cli import main
from segcli.vocab import cache, text
from segcli.vocab.parse import parse_vocab
folder, out, heavy = sys.argv[1], sys.argv[2], sys.argv[3:]
source = text.text_source_from_bundle(folder)
features = text.build_text_tower(source).encode(["a photo of a dog.", "There is a car in the scene"])
embeddings, _ = cache.get_class_embeddings(parse_vocab("dog|puppy,stuff:sky"), source, cache=False)
try:
    main(["vocab", "embed", "--weights", folder, "--dataset", "cityscapes", "-o", out])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"shapes": [list(features.shape), list(embeddings.shape)], "exit": code,
                  "loaded": [name for name in heavy if name in sys.modules],
                  "ours": "segcli.vocab.clip_text" in sys.modules}))
from segcli.runtime import exit_now
exit_now(0)
"""


def test_embedding_text_does_not_import_open_clip(model_dir, tmp_path):
    """Embedding a vocabulary, in segcli's code and through `segcli vocab embed`, imports none of
    open_clip, torchvision, timm, torch._dynamo (a fresh process: this one may have them)."""
    out = tmp_path / "emb.safetensors"
    env = {**os.environ, "SEGCLI_HOME": str(tmp_path / "home")}
    run = subprocess.run([sys.executable, "-c", _EMBED_AND_LIST_MODULES, model_dir, str(out), *HEAVY_MODULES],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.splitlines()[-1])
    assert report == {"shapes": [[2, 32], [2, 2, 32]], "exit": 0, "loaded": [], "ours": True}, run.stderr
    assert out.is_file() and "computed" in run.stderr


# ---- the class-embeddings file (`segcli vocab embed -o FILE`) ---------------------------------------

def test_embeddings_file_round_trip(tmp_path):
    from segcli.vocab.datasets import dataset_vocabulary

    vocab = dataset_vocabulary("cityscapes")  # things + stuff, category ids, a dataset name
    emb = torch.nn.functional.normalize(torch.randn(len(vocab), 1, 24), dim=-1)
    path = tmp_path / "city.safetensors"
    cache.save_embeddings(path, emb, vocab, text_model="clip-x|weights-sha256:abc")
    loaded, tensor = load_embeddings(path)
    assert loaded == vocab and loaded.category_ids == vocab.category_ids and loaded.name == "cityscapes"
    assert tensor.dtype == torch.float32
    torch.testing.assert_close(tensor, emb, rtol=0, atol=0)
    synonyms = parse_vocab("dog|puppy|hound,stuff:sky")
    emb = torch.randn(2, 3, 8)
    cache.save_embeddings(path, emb, synonyms)
    loaded, tensor = load_embeddings(path, embed_dim=8)
    assert loaded.classes == [["dog", "puppy", "hound"], ["sky"]] and loaded.num_things == 1
    assert loaded.category_ids is None and loaded.name is None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "segcli-class-embeddings" and meta["num_classes"] == "2" and meta["embed_dim"] == "8"


def test_bad_embeddings_files(tmp_path):
    from safetensors.torch import save_file

    vocab = parse_vocab("dog,cat")
    good = tmp_path / "good.safetensors"
    cache.save_embeddings(good, torch.randn(2, 1, 8), vocab)
    with pytest.raises(InputNotFoundError, match="class-embeddings file not found"):
        load_embeddings(tmp_path / "missing.safetensors")

    def refused(path, match):
        with pytest.raises(VocabularyError, match=match) as info:
            load_embeddings(path)
        assert info.value.exit_code == 8 and "\n" not in str(info.value)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not safetensors at all")
    refused(garbage, "is not a segcli class-embeddings file")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-7])
    refused(truncated, "is not a segcli class-embeddings file")
    bare = tmp_path / "bare.safetensors"
    save_file({"class_embeddings": torch.randn(2, 1, 8)}, str(bare))
    refused(bare, "no format 'segcli-class-embeddings'")
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(1)}, str(other), metadata={"format": "segcli-class-embeddings"})
    refused(other, "no 'class_embeddings' tensor")
    meta = {"format": "segcli-class-embeddings", "version": "1", "classes": '[["dog"], ["cat"]]', "num_things": "2"}
    wrong_k = tmp_path / "k.safetensors"
    save_file({"class_embeddings": torch.randn(3, 1, 8)}, str(wrong_k), metadata=meta)
    refused(wrong_k, r"shape \(3, 1, 8\) do not fit 2 classes")
    no_things = tmp_path / "t.safetensors"
    save_file({"class_embeddings": torch.randn(2, 1, 8)}, str(no_things),
              metadata={k: v for k, v in meta.items() if k != "num_things"})
    refused(no_things, "lacks 'num_things'")
    bad_json = tmp_path / "j.safetensors"
    save_file({"class_embeddings": torch.randn(2, 1, 8)}, str(bad_json), metadata={**meta, "classes": "[[dog"})
    refused(bad_json, "malformed metadata")
    future = tmp_path / "v.safetensors"
    save_file({"class_embeddings": torch.randn(2, 1, 8)}, str(future), metadata={**meta, "version": "99"})
    refused(future, "version '99'")
    nan = tmp_path / "nan.safetensors"
    save_file({"class_embeddings": torch.full((2, 1, 8), float("nan"))}, str(nan), metadata=meta)
    refused(nan, "not finite")
    with pytest.raises(VocabularyError, match="embeddings have 8 dims, this model needs 768"):
        load_embeddings(good, embed_dim=768)
    with pytest.raises(VocabularyError, match="do not fit 3 classes"):
        cache.save_embeddings(tmp_path / "x.safetensors", torch.randn(2, 1, 8), parse_vocab("a,b,c"))
    result = CliRunner().invoke(vocab_app, ["show", "--embeddings", str(garbage)])
    assert isinstance(result.exception, VocabularyError)
    result = CliRunner().invoke(vocab_app, ["show", "--embeddings", str(good), "--vocab", "a"])
    assert isinstance(result.exception, UsageError)


def test_broken_model_folder_is_a_weights_error(tmp_path, bundle):
    """Garbage / empty config.json or a truncated text_tower.safetensors: one WeightsError line naming the file."""
    import shutil

    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(bundle.path / "config.json", folder / "config.json")
    (folder / "text_tower.safetensors").write_bytes((bundle.path / "text_tower.safetensors").read_bytes()[:100000])
    source = text.text_source_from_bundle(folder)
    with pytest.raises(WeightsError) as info:
        text.build_text_tower(source)
    assert str(folder / "text_tower.safetensors") in str(info.value) and "\n" not in str(info.value)
    for content, match in ((b"", "is empty"), (b"{not json", "is not valid JSON"), (b"[1, 2]", "JSON list"),
                           (b"\xff\xfe", "cannot read")):
        (folder / "config.json").write_bytes(content)
        with pytest.raises(WeightsError, match=match) as info:
            text.text_source_from_bundle(folder)
        assert str(folder / "config.json") in str(info.value)
    (folder / "config.json").write_text('{"text_tower": {"open_clip_text_cfg": {}, "embed_dim": "wide"}}')
    with pytest.raises(WeightsError, match="embed_dim is not a number"):
        text.text_source_from_bundle(folder)

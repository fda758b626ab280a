"""Class embeddings against the golden bundle, the embeddings cache, and `segcli vocab`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from segcli.commands.vocab import app as vocab_app
from segcli.errors import InputNotFoundError, UsageError, VocabularyError, WeightsError
from segcli.vocab import cache, load_embeddings, text
from segcli.vocab.parse import Vocabulary, from_official, parse_vocab


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
    with pytest.raises(WeightsError, match="no model config"):
        text.text_source_from_open_clip("no_such_model", tmp_path / "x.bin")
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

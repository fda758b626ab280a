"""CLIP's text tower and byte-level BPE tokenizer in plain PyTorch.

It reproduces what open_clip 3.x computes for the standard CLIP text tower, bit for bit on CPU fp32,
without importing open_clip (1.7 s per process: it imports torchvision, timm and torch._dynamo, and
doubles the interpreter's heap):

* `CLIPTokenizer` = `open_clip.tokenizer.SimpleTokenizer(context_length=...)` with its default
  settings: ftfy + double html unescape + whitespace cleanup + lower case, CLIP's regex split, the
  BPE merges of `bpe_simple_vocab_16e6.txt.gz` (read from the installed open_clip package folder),
  `<start_of_text>` ... `<end_of_text>`, truncated to the context length with the end token last,
  zero padded.
* `CLIPTextTransformer` = `open_clip.model._build_text_tower(embed_dim, text_cfg, quick_gelu)`
  (`TextTransformer`): token + positional embedding, pre-LN residual blocks of nn.MultiheadAttention
  under the additive causal mask and a c_fc -> GELU (or QuickGELU) -> c_proj MLP, ln_final, the
  features at the end token (the largest id of a sequence), `@ text_projection`. Same state-dict
  keys and shapes, so open_clip CLIP checkpoints and text_tower.safetensors files load unchanged,
  and the same random draws in the same order, so a seeded tower equals open_clip's.

Only the standard configuration is built (context_length, vocab_size, width, heads, layers,
mlp_ratio, quick_gelu); `text_tower_config` refuses any other setting that would change the
computation with a WeightsError naming it.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from segcli.errors import WeightsError

# ---- configuration ----------------------------------------------------------------------------

# open_clip 3.3 CLIPTextCfg settings that change the computation, with the values that build the
# standard tower (a value equal to one of these is accepted).
_MUST_BE_DEFAULT: dict[str, tuple] = {
    "tokenizer_kwargs": (None, {}),
    "ls_init_value": (None,),
    "embed_cls": (False,),
    "no_causal_mask": (False,),
    "pool_type": ("argmax",),
    "proj_type": ("linear",),
    "proj_bias": (False,),
    "act_kwargs": (None, {}),
    "norm_kwargs": (None, {}),
    "block_type": (None, "default"),
    "qk_norm": (False,),
    "scaled_cosine_attn": (False,),
    "scale_heads": (False,),
    "scale_attn_inner": (False,),
    "scale_attn": (False,),
    "scale_fc": (False,),
}
# Settings that leave this tower's features unchanged: pad_id / eos_id are only read with embed_cls,
# a padding mask or pool_type 'eos'; output_tokens only adds a second return value; open_clip's text
# tower does not read final_ln_after_pool; the tokenizer mode and hf_* options only apply with a
# Hugging Face model or tokenizer (refused below).
_NO_EFFECT = frozenset({"pad_id", "eos_id", "output_tokens", "final_ln_after_pool", "tokenizer_mode",
                        "hf_model_pretrained", "hf_proj_type", "hf_pooler_type"})
_SIZES = ("context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio")


@dataclass(frozen=True)
class TextTowerConfig:
    """Sizes of a standard CLIP text tower (defaults: open_clip's CLIPTextCfg)."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    embed_dim: int = 512
    quick_gelu: bool = False

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)  # as open_clip rounds it


def text_tower_config(text_cfg: dict, embed_dim: int, quick_gelu: bool = False) -> TextTowerConfig:
    """The tower an open_clip `text_cfg` describes; WeightsError (one line, naming the setting) for a
    configuration other than the standard CLIP text tower."""
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if text_cfg.get(key):
            raise WeightsError(f"Hugging Face transformers text towers are not supported "
                               f"(they would need a download): text tower setting {key}={text_cfg[key]!r}")
    for key, value in text_cfg.items():
        if key in _MUST_BE_DEFAULT:
            if value not in _MUST_BE_DEFAULT[key]:
                raise WeightsError(f"text tower setting {key}={value!r} is not supported "
                                   f"(segcli builds the standard CLIP text tower: {key}={_MUST_BE_DEFAULT[key][0]!r})")
        elif key not in _SIZES and key not in _NO_EFFECT and key not in ("hf_model_name", "hf_tokenizer_name"):
            raise WeightsError(f"unknown text tower setting {key!r} (not an open_clip CLIPTextCfg field)")
    sizes = {key: _positive(key, text_cfg[key], whole=key != "mlp_ratio") for key in _SIZES if key in text_cfg}
    config = TextTowerConfig(**sizes, embed_dim=_positive("embed_dim", embed_dim, whole=True),
                             quick_gelu=bool(quick_gelu))
    if config.width % config.heads:
        raise WeightsError(f"text tower width {config.width} is not a multiple of its {config.heads} heads")
    if config.mlp_width <= 0:
        raise WeightsError(f"text tower setting mlp_ratio={config.mlp_ratio!r} leaves no MLP width")
    return config


def _positive(name: str, value, whole: bool):
    """A size from config.json: a positive int (768.0 counts as 768), or a positive number."""
    number = int(value) if whole and isinstance(value, float) and value.is_integer() else value
    if isinstance(value, bool) or not isinstance(number, int if whole else (int, float)) or not number > 0:
        raise WeightsError(f"text tower setting {name}={value!r} is not a positive {'whole ' if whole else ''}number")
    return number


# ---- the text transformer ---------------------------------------------------------------------

class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_width: int, activation: type[nn.Module]):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, mlp_width)),
            ("gelu", activation()),
            ("c_proj", nn.Linear(mlp_width, width)),
        ]))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        normed = self.ln_1(x)
        # one tensor as query, key and value: nn.MultiheadAttention takes the same (self-attention)
        # path as in open_clip, which also passes it three times
        x = x + self.attn(normed, normed, normed, need_weights=False, attn_mask=attn_mask.to(x.dtype))[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """The stack of residual blocks (`transformer.resblocks.N.*` in CLIP checkpoints)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_width: int, activation: type[nn.Module]):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_width, activation) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


def causal_mask(length: int) -> torch.Tensor:
    """Additive attention mask: 0 on and below the diagonal, -inf above (a token sees its past)."""
    return torch.full((length, length), float("-inf")).triu_(1)


class CLIPTextTransformer(nn.Module):
    """CLIP's text tower: (N, context_length) token ids -> (N, embed_dim) features, un-normalised.

    Constructed with CLIP's random initialisation, drawn in open_clip's order (the synthetic test
    model relies on it), or without any (`initialise=False`, used by `empty_text_transformer` to
    build one to load weights into)."""

    def __init__(self, config: TextTowerConfig, initialise: bool = True):
        super().__init__()
        self.config = config
        self.context_length = config.context_length
        activation = QuickGELU if config.quick_gelu else nn.GELU
        # registration order = open_clip's: the modules' own initialisation draws in the same order
        if initialise:
            self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        else:  # nn.Embedding's own normal_ would import torch._dynamo (1 s) on the meta device
            self.token_embedding = nn.Embedding(config.vocab_size, config.width,
                                                _weight=torch.empty(config.vocab_size, config.width))
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        self.transformer = Transformer(config.width, config.layers, config.heads, config.mlp_width, activation)
        self.ln_final = nn.LayerNorm(config.width)
        # (without initialisation, its values come later: computed on the meta device, they would
        # import torch._dynamo)
        mask = causal_mask(config.context_length) if initialise else torch.empty(config.context_length,
                                                                                 config.context_length)
        self.register_buffer("attn_mask", mask, persistent=False)
        self.text_projection = nn.Parameter(torch.empty(config.width, config.embed_dim))
        if initialise:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """CLIP's initialisation (open_clip TextTransformer.init_parameters, same order)."""
        width, layers = self.config.width, self.config.layers
        proj_std = width ** -0.5 * (2 * layers) ** -0.5
        attn_std = width ** -0.5
        fc_std = (2 * width) ** -0.5
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        dtype = self.transformer.resblocks[0].mlp.c_fc.weight.dtype  # open_clip's cast dtype
        x = self.token_embedding(tokens).to(dtype)
        x = x + self.positional_embedding[:length].to(dtype)
        x = self.transformer(x, self.attn_mask[:length, :length])
        x = self.ln_final(x)  # on every token, then pooled, as open_clip does
        # the end-of-text token has the largest id of a sequence
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return pooled @ self.text_projection


def empty_text_transformer(config: TextTowerConfig, device: str | torch.device = "cpu") -> CLIPTextTransformer:
    """A tower with uninitialised parameters, to load weights into: built on the meta device, so
    the random initialisation (1.3 s for convnext_large_d_320's tower) is skipped."""
    with torch.device("meta"):
        tower = CLIPTextTransformer(config, initialise=False)
    tower.to_empty(device=device)
    with torch.no_grad():
        tower.attn_mask.copy_(causal_mask(config.context_length))
    return tower


# ---- the tokenizer ----------------------------------------------------------------------------

MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
_NUM_MERGES = 49408 - 2 * 256 - 2  # CLIP's 49408 ids: 256 bytes, the same ending a word, merges, 2 specials
# CLIP's split: the special tokens, English contractions, letter runs, single digits, other symbol runs
_PATTERN = (START_OF_TEXT + "|" + END_OF_TEXT
            + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")


def merges_path() -> Path:
    """CLIP's BPE merges as shipped in the open_clip package, found without importing it."""
    spec = importlib.util.find_spec("open_clip")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / MERGES_FILE
        if path.is_file():
            return path
    raise WeightsError(f"the CLIP tokenizer needs {MERGES_FILE} from the open_clip_torch package, "
                       f"which is not installed (pip install open_clip_torch)")


def byte_to_unicode() -> dict[int, str]:
    """Reversible byte -> character map of CLIP's BPE: printable Latin-1 bytes stand for themselves,
    the others (space, control characters...) for characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table  # in this order: the first 512 token ids follow it


@dataclass
class _BPETables:
    byte_chars: dict[int, str]
    token_ids: dict[str, int]
    merge_ranks: dict[tuple[str, str], int]
    pattern: object  # compiled `regex` pattern
    words: dict[str, tuple[str, ...]]  # BPE of a word, remembered (vocabularies repeat their words)


@functools.lru_cache(maxsize=None)
def _bpe_tables() -> _BPETables:
    """Built once per process, on first use (0.1 s)."""
    import regex  # \p{L} / \p{N} classes, which `re` lacks

    with gzip.open(merges_path()) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:_NUM_MERGES + 1]]  # line 0 is a version header
    byte_chars = byte_to_unicode()
    symbols = list(byte_chars.values())
    vocabulary = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), START_OF_TEXT,
                  END_OF_TEXT]
    token_ids = {token: i for i, token in enumerate(vocabulary)}
    merge_ranks = {merge: rank for rank, merge in enumerate(merges)}
    words = {START_OF_TEXT: (START_OF_TEXT,), END_OF_TEXT: (END_OF_TEXT,)}
    return _BPETables(byte_chars, token_ids, merge_ranks, regex.compile(_PATTERN, regex.IGNORECASE), words)


def clean_text(text: str) -> str:
    """CLIP's cleaning: ftfy, html entities unescaped twice (web text is often escaped twice),
    whitespace runs -> one space, lower case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


def _bpe(word: str, tables: _BPETables) -> tuple[str, ...]:
    """Merge the symbols of a byte-encoded word, lowest-ranked pair first, until no pair is a merge."""
    known = tables.words.get(word)
    if known is not None:
        return known
    symbols = [*word[:-1], word[-1] + "</w>"]
    ranks = tables.merge_ranks
    while len(symbols) > 1:
        first, second = min(zip(symbols, symbols[1:]), key=lambda pair: ranks.get(pair, math.inf))
        if (first, second) not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):  # every occurrence, left to right, without overlaps
            if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    result = tuple(symbols)
    tables.words[word] = result
    return result


class CLIPTokenizer:
    """Sentences -> (N, context_length) int64 token ids, as open_clip's SimpleTokenizer."""

    def __init__(self, context_length: int = 77):
        self.context_length = int(context_length)

    @property
    def _tables(self) -> _BPETables:
        return _bpe_tables()

    @property
    def sot_token_id(self) -> int:
        return self._tables.token_ids[START_OF_TEXT]

    @property
    def eot_token_id(self) -> int:
        return self._tables.token_ids[END_OF_TEXT]

    @property
    def vocab_size(self) -> int:
        return len(self._tables.token_ids)

    def encode(self, text: str) -> list[int]:
        """Token ids of one sentence, without the start/end tokens."""
        tables = self._tables
        ids = []
        for piece in tables.pattern.findall(clean_text(text)):
            word = "".join(tables.byte_chars[b] for b in piece.encode("utf-8"))
            ids.extend(tables.token_ids[symbol] for symbol in _bpe(word, tables))
        return ids

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        sot, eot = self.sot_token_id, self.eot_token_id
        result = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [sot, *self.encode(text), eot]
            if len(ids) > self.context_length:
                ids = ids[:self.context_length - 1] + [eot]  # truncated, still ending with the end token
            result[row, :len(ids)] = torch.tensor(ids)
        return result

"""WordPiece tokenizer wrapper over Hugging Face `tokenizers`; importable without torch.

`load_tokenizer` takes a `vocab.txt`, a `tokenizer.json`, or a directory holding either, so
Google and Hugging Face vocabularies work as they are.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers.models import WordPiece

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Python's str.lower() (used by the reference BERT tokenizer) maps a word-final capital sigma to
# "ς"; the Rust lowercaser maps every "Σ" to "σ". This is Python's Final_Sigma context.
_FINAL_SIGMA = (
    r"(?<=[\p{Cased}&&\P{Case_Ignorable}]\p{Case_Ignorable}*)Σ(?!\p{Case_Ignorable}*[\p{Cased}&&\P{Case_Ignorable}])"
)


@functools.cache
def _character_classes() -> dict[str, str]:
    """Regex classes of the reference tokenizer's character tests, from Python's own Unicode tables.

    `tokenizers`' Rust tables differ from Python's `unicodedata` (other Unicode versions, marks
    Mc/Me stripped as accents, unassigned code points kept, a shifted CJK range), so the classes
    are built from the same tables the reference uses.
    """
    members: dict[str, list[int]] = {"control": [], "space": [], "mark": [], "punct": []}
    control, space, mark, punct = members.values()
    category = unicodedata.category
    for cp in range(0x110000):
        cat = category(chr(cp))
        if cat[0] == "C":
            if cp not in (9, 10, 13):
                control.append(cp)  # _clean_text drops these (and NUL)
        elif cat[0] == "Z":
            space.append(cp)  # _is_whitespace (Zs), plus Zl/Zp where str.split() splits
        elif cat == "Mn":
            mark.append(cp)  # _run_strip_accents drops these after NFD
        elif cat[0] == "P":
            punct.append(cp)
    control.append(0xFFFD)
    space += [9, 10, 13]
    space.remove(0x20)  # already a space; replacing it would only cost time
    punct += [cp for cp in range(33, 127) if not chr(cp).isalnum()]  # _is_punctuation: all ASCII symbols
    classes = {name: _to_class(sorted(set(cps))) for name, cps in members.items()}
    classes["cjk"] = _to_class([cp for lo, hi in _CJK_RANGES for cp in range(lo, hi + 1)])
    return classes


_CJK_RANGES = (  # the reference's _is_chinese_char, in code point order
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0x2F800, 0x2FA1F),
)  # fmt: skip


def _to_class(code_points: list[int]) -> str:
    ranges: list[list[int]] = []
    for cp in code_points:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    parts = [f"\\x{{{lo:X}}}" if lo == hi else f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in ranges]
    return "[" + "".join(parts) + "]"


def bert_normalizer(lowercase: bool, strip_accents: bool | None = None):
    """The reference BertTokenizer's normalisation, in its order, with offsets tracked.

    Reference order: drop control characters, map whitespace to " ", NFC, then per word
    lowercase (with the final-sigma rule) and strip accents (NFD, drop Mn). CJK characters are
    split off by `bert_pre_tokenizer`, which gives the same words as the reference's spacing.
    """
    if strip_accents is None:
        strip_accents = lowercase
    classes = _character_classes()
    steps = [
        normalizers.Replace(Regex(classes["control"]), ""),
        normalizers.Replace(Regex(classes["space"]), " "),
    ]
    if not strip_accents:
        # With accent stripping the NFD below makes an NFC here redundant (lowercasing keeps
        # canonical equivalence), so it only runs when accents stay.
        steps.append(normalizers.NFC())
    if lowercase:
        steps += [normalizers.Replace(Regex(_FINAL_SIGMA), "ς"), normalizers.Lowercase()]
    if strip_accents:
        steps += [normalizers.NFD(), normalizers.Replace(Regex(classes["mark"]), "")]
    return normalizers.Sequence(steps)


def bert_pre_tokenizer(split_cjk: bool = True):
    """Split on whitespace, then isolate every punctuation character (and CJK character)."""
    classes = _character_classes()
    isolate = classes["punct"][:-1] + (classes["cjk"][1:-1] if split_cjk else "") + "]"
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(isolate), "isolated")])


@dataclass
class Encoding:
    ids: list[int]
    type_ids: list[int]
    attention_mask: list[int]
    offsets: list[tuple[int, int]]  # character offsets into the original string of the token's sequence
    word_ids: list[int | None] = field(default_factory=list)  # word index in its sequence; None for specials
    sequence_ids: list[int | None] = field(default_factory=list)  # 0 = text, 1 = text_pair, None = special
    tokens: list[str] = field(default_factory=list)
    special_tokens_mask: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def _convert(enc) -> Encoding:
    return Encoding(
        ids=list(enc.ids),
        type_ids=list(enc.type_ids),
        attention_mask=list(enc.attention_mask),
        offsets=[tuple(o) for o in enc.offsets],
        word_ids=list(enc.word_ids),
        sequence_ids=list(enc.sequence_ids),
        tokens=list(enc.tokens),
        special_tokens_mask=list(enc.special_tokens_mask),
    )


class BertTokenizer:
    """BERT WordPiece: normalise, split on whitespace and punctuation, then greedy longest-match."""

    def __init__(self, backend: _HFTokenizer, lowercase: bool):
        self.backend = backend
        self.lowercase = lowercase
        backend.no_padding()
        backend.no_truncation()
        for token in SPECIAL_TOKENS:
            if backend.token_to_id(token) is None:
                raise ValueError(f"the vocabulary has no {token} token")
        self.pad_id = backend.token_to_id("[PAD]")
        self.unk_id = backend.token_to_id("[UNK]")
        self.cls_id = backend.token_to_id("[CLS]")
        self.sep_id = backend.token_to_id("[SEP]")
        self.mask_id = backend.token_to_id("[MASK]")

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_vocab(
        cls, vocab: dict[str, int], lowercase: bool = True, strip_accents: bool | None = None, split_cjk: bool = True
    ) -> BertTokenizer:
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(
                f"the vocabulary has no {' or '.join(missing)} token; BERT needs {' '.join(SPECIAL_TOKENS)}"
            )
        backend = _HFTokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        backend.normalizer = bert_normalizer(lowercase, strip_accents)
        backend.pre_tokenizer = bert_pre_tokenizer(split_cjk)
        backend.decoder = decoders.WordPiece(prefix="##")
        cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        # Special tokens written in the text stay whole, as in the reference tokenizer.
        backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
        return cls(backend, lowercase)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    # --- encoding ----------------------------------------------------------------------------

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        max_length: int | None = None,
        truncation: str = "longest_first",
    ) -> Encoding:
        """[CLS] text [SEP] (text_pair [SEP]); cut to `max_length` tokens when given."""
        self._set_truncation(max_length, stride=0, strategy=truncation)
        try:
            enc = self.backend.encode(text, text_pair)
        finally:
            self.backend.no_truncation()
        return _convert(enc)

    def encode_batch(self, texts: list[str] | list[tuple[str, str]], max_length: int | None = None) -> list[Encoding]:
        self._set_truncation(max_length, stride=0, strategy="longest_first")
        try:
            encs = self.backend.encode_batch(list(texts))
        finally:
            self.backend.no_truncation()
        return [_convert(e) for e in encs]

    def encode_windows(
        self,
        text: str,
        text_pair: str | None = None,
        max_length: int = 512,
        stride: int = 128,
        truncate_first: bool = False,
    ) -> list[Encoding]:
        """All windows of `max_length` tokens, consecutive windows sharing `stride` tokens.

        With a pair, only the second sequence is windowed (the question stays whole for QA)
        unless `truncate_first` is set.
        """
        strategy = "only_first" if (text_pair is None or truncate_first) else "only_second"
        self._set_truncation(max_length, stride=stride, strategy=strategy)
        try:
            enc = self.backend.encode(text, text_pair)
        finally:
            self.backend.no_truncation()
        return [_convert(enc)] + [_convert(o) for o in enc.overflowing]

    def _set_truncation(self, max_length: int | None, stride: int, strategy: str) -> None:
        if max_length is None:
            self.backend.no_truncation()
            return
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3 (for [CLS] x [SEP]); got {max_length}")
        self.backend.enable_truncation(max_length, stride=stride, strategy=strategy)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    # --- persistence -------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write `tokenizer.json` and `vocab.txt` (ids in order) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        vocab = self.get_vocab()
        ordered = sorted(vocab.items(), key=lambda kv: kv[1])
        (directory / "vocab.txt").write_text("".join(f"{tok}\n" for tok, _ in ordered), encoding="utf-8")
        config = {"do_lower_case": self.lowercase, "tokenizer_class": "BertTokenizer", "model_max_length": 512}
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return directory


def read_vocab(path: Path) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            token = line.rstrip("\n").rstrip("\r")
            if token in vocab:
                raise ValueError(f"{path}: line {index + 1}: duplicate token {token!r}")
            vocab[token] = index
    if not vocab:
        raise ValueError(f"{path} is empty")
    return vocab


def _lowercase_setting(directory: Path, vocab: dict[str, int]) -> bool:
    """`do_lower_case` from tokenizer_config.json, else guess: a vocabulary with capitals is cased."""
    config = directory / "tokenizer_config.json"
    if config.exists():
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("do_lower_case")
            if isinstance(value, bool):
                return value
        except json.JSONDecodeError:
            pass
    capitalised = sum(1 for tok in vocab if tok[:1].isupper() and not tok.startswith("["))
    return capitalised < 0.01 * len(vocab)


def _lowercases(normalizer: dict) -> bool:
    """Whether a tokenizer.json normalizer (possibly a Sequence) lowercases."""
    if normalizer.get("type") == "Lowercase":
        return True
    if normalizer.get("type") == "BertNormalizer":
        return bool(normalizer.get("lowercase", False))
    return any(_lowercases(step) for step in normalizer.get("normalizers") or [])


def _is_standard_bert(spec: dict, backend: _HFTokenizer) -> bool:
    """A Hugging Face BERT tokenizer.json that `BertTokenizer.from_vocab` rebuilds without losing anything.

    Anything else (a custom pre-tokenizer such as a digit split, `clean_text: false`, another
    continuation prefix or word length limit, added tokens outside the vocabulary) is kept as it is.
    """
    norm, model = spec.get("normalizer") or {}, spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    vocab = backend.get_vocab(with_added_tokens=False)
    return (
        norm.get("type") == "BertNormalizer"
        and norm.get("clean_text", True) is not False
        and pre.get("type") == "BertPreTokenizer"
        and model.get("type") == "WordPiece"
        and model.get("continuing_subword_prefix", "##") == "##"
        and model.get("max_input_chars_per_word", 100) == 100
        and all(token.get("content") in vocab for token in spec.get("added_tokens") or [])
    )


def load_tokenizer(path: str | Path, lowercase: bool | None = None) -> BertTokenizer:
    """Load from `tokenizer.json`, `vocab.txt`, or a directory holding either (tokenizer.json first)."""
    path = Path(path)
    if path.is_dir():
        for name in ("tokenizer.json", "vocab.txt"):
            if (path / name).exists():
                return load_tokenizer(path / name, lowercase)
        raise FileNotFoundError(f"{path} holds neither tokenizer.json nor vocab.txt")
    if not path.exists():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    if path.suffix == ".json":
        try:
            backend = _HFTokenizer.from_file(str(path))
        except Exception as err:
            raise ValueError(f"{path} is not a valid tokenizer.json: {err}") from err
        spec = json.loads(path.read_text(encoding="utf-8"))
        norm = spec.get("normalizer") or {}
        detected = _lowercases(norm)
        if _is_standard_bert(spec, backend):
            # A Hugging Face BERT tokenizer.json: rebuild it with the reference normalisation order,
            # so it behaves exactly like the same vocab.txt.
            return BertTokenizer.from_vocab(
                backend.get_vocab(with_added_tokens=False),
                lowercase=detected if lowercase is None else lowercase,
                strip_accents=norm.get("strip_accents") if lowercase is None else None,
                split_cjk=bool(norm.get("handle_chinese_chars", True)),
            )
        if lowercase is not None and lowercase != detected:
            vocab = backend.get_vocab()
            return BertTokenizer.from_vocab(vocab, lowercase=lowercase)
        return BertTokenizer(backend, detected)
    vocab = read_vocab(path)
    if lowercase is None:
        lowercase = _lowercase_setting(path.parent, vocab)
    return BertTokenizer.from_vocab(vocab, lowercase=lowercase)

"""Property-based fuzzing of the three user-facing loaders: search config, merge plan, eval set.

Why: these loaders are the first code a user's typo meets, and each promises exactly one error
class (`SearchConfigError`, `PlanError`, `EvalSetError`) whose message names the file and the
field. Any other exception (TypeError, KeyError, RecursionError, UnicodeDecodeError, a leaked
pydantic, YAML or pyarrow error) is a traceback instead of a message, and a `except XError`
around the loader (the CLI, the search driver) lets it through. Example-based tests only cover
the typos someone thought of; here hypothesis generates whole random documents, single-key
mutations of the shipped valid documents, random rows and raw bytes.

The property everywhere: the call returns the validated object or raises exactly the loader's
error class with a non-empty message; for a mutation at a known field, the message also names
that field's top-level key. Runs are derandomized (same examples on every machine) and small
enough to keep the file well under a minute on 2 cores.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import warnings
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, get_args

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from pydantic import BaseModel

from judges import EvalSet, EvalSetError, load_eval_set
from merging import METHODS, MergePlan, PlanError, load_plan, method_names, parse_plan
from search.config import SearchConfig, SearchConfigError, load_search_config, parse_search_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_FILES = settings(FUZZ, max_examples=150)  # examples that write and parse a file each

# ------------------------------------------------------------------------------------------------
# Strategies

#: Values a hand-written config or row gets wrong in practice, plus the pathological ones
#: (non-finite floats, 4000-digit ints, huge and blank strings; ints past the str-conversion
#: limit are in the file tests, as text: hypothesis cannot repr them).
EDGE_VALUES: list[Any] = [None, True, False, 0, -1, 10**4000, math.nan, math.inf, -math.inf, 1e-320, "",
                          " ", "x" * 100_000, "\x00", [], {}, [None], {"": None}, "2001-13-01"]

_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
            | st.text(max_size=12) | st.sampled_from(EDGE_VALUES))


def documents(words: Collection[str] = (), *, file: bool = False) -> st.SearchStrategy[Any]:
    """Random nested documents. `words` (field names, method names, ...) are mixed into keys and
    string values so that random documents reach the validators behind the field names; with
    `file`, only what a YAML/JSON file can hold (string keys)."""
    vocab = st.sampled_from(sorted(words)) if words else st.nothing()
    keys = vocab | st.text(max_size=8) | (st.nothing() if file else st.integers(-3, 3) | st.none() | st.booleans())
    return st.recursive(_scalars | vocab, lambda kids: st.lists(kids, max_size=4)
                        | st.dictionaries(keys, kids, max_size=5), max_leaves=14)


def mappings(words: Collection[str]) -> st.SearchStrategy[Any]:
    """Random documents, mostly mappings whose keys are often real field names."""
    keys = st.sampled_from(sorted(words)) | st.text(max_size=8)
    return st.dictionaries(keys, documents(words), max_size=8) | documents(words)


def _model_classes(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in get_args(annotation):
        yield from _model_classes(arg)


def _vocabulary(model: type[BaseModel], *docs: Any) -> set[str]:
    """Every field name of `model` and its nested models, plus the keys and string values of
    `docs`: what a real (mis)typed document is made of."""
    words: set[str] = set()
    stack, seen = [model], set()
    while stack:
        m = stack.pop()
        if m not in seen:
            seen.add(m)
            for name, info in m.model_fields.items():
                words.add(name)
                stack.extend(_model_classes(info.annotation))
    for doc in docs:
        for path in _paths(doc):
            words.update(p for p in path if isinstance(p, str))
            leaf = _get(doc, path)
            if isinstance(leaf, str):
                words.add(leaf)
    return words


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path below the root of a nested dict/list document."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,))


@st.composite
def mutations(draw: st.DrawFn, doc: dict[str, Any], values: st.SearchStrategy[Any]) -> tuple[dict[str, Any], str]:
    """A copy of a valid `doc` with one key at a random path replaced (by a random document or
    a plain string, the commonest typo), deleted or added to, and the top-level key the mutation
    is under (the field the error must name). The top-level key is drawn first, so that small
    sections (`merge_method`) are hit as often as large ones (`models`)."""
    top = draw(st.sampled_from(list(doc)))
    path = draw(st.sampled_from([p for p in _paths(doc) if p[0] == top]))
    new = copy.deepcopy(doc)
    parent, key = _get(new, path[:-1]), path[-1]
    op = draw(st.sampled_from(["replace", "string", "delete", "add"]))
    if op == "string":
        parent[key] = draw(st.text(max_size=12))
    elif op == "delete":
        del parent[key]
    elif op == "add" and isinstance(parent[key], dict):
        parent[key][draw(st.text(min_size=1, max_size=8))] = draw(values)
    elif op == "add" and isinstance(parent[key], list):
        parent[key].append(draw(values))
    else:
        parent[key] = draw(values)
    return new, str(path[0])


SHIPPED = {p.name: yaml.safe_load(p.read_text()) for p in sorted(CONFIGS.glob("*.yaml"))}
SEARCH_CONFIGS = {name: doc for name, doc in SHIPPED.items() if "models" in doc and "merge_method" not in doc}
PLANS = {name: doc for name, doc in SHIPPED.items() if "merge_method" in doc}
CONFIG_WORDS = _vocabulary(SearchConfig, *SEARCH_CONFIGS.values()) | set(method_names())
PLAN_WORDS = (_vocabulary(MergePlan, *PLANS.values()) | set(method_names())
              | {p for spec in METHODS.values() for p in (*spec.model_params, *spec.shared_params)})


def _expect(call: Callable[[], Any], result_type: type, error: type[Exception]) -> Exception | None:
    """The property: `call` returns a `result_type` or raises exactly `error` with a message.
    Anything else propagates and fails the test with its own traceback."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = call()
    except error as exc:
        assert type(exc) is error, f"raised a subclass {type(exc).__name__}, not {error.__name__}"
        assert str(exc).strip(), f"{error.__name__} with an empty message"
        _event("rejected")
        return exc
    _event("accepted")
    assert isinstance(result, result_type), f"returned {type(result).__name__}, not {result_type.__name__}"
    return None


def _event(outcome: str) -> None:
    """Counted by `pytest --hypothesis-show-statistics`: a fuzzer whose examples all end the same
    way is testing less than it seems."""
    if currently_in_test_context():
        event(outcome)


def _names(exc: Exception | None, field: str) -> None:
    if exc is not None:
        assert field in str(exc), f"error does not name the mutated field {field!r}:\n{exc}"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for all examples: hypothesis reruns a test body without re-creating
    function-scoped fixtures, so a tmp_path would be shared across examples anyway."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_valid_starting_points(tmp_path: Path, fmt: str) -> None:
    """The mutation tests start from these; were one invalid, every mutation would 'pass'."""
    assert SEARCH_CONFIGS and PLANS
    for doc in SEARCH_CONFIGS.values():
        parse_search_config(doc)
    for doc in PLANS.values():
        parse_plan(doc)
    loaded = load_eval_set(_write_rows(tmp_path, VALID_ROWS, fmt))
    assert loaded.ids == ("q1", "q2", "3") and loaded[1].category == "unsafe"


# ------------------------------------------------------------------------------------------------
# YAML files: shared by the search-config and plan loaders (merging.plan.read_yaml)

LOADERS = [(load_search_config, SearchConfig, SearchConfigError), (load_plan, MergePlan, PlanError)]
_LOADER_IDS = ["search_config", "plan"]


@pytest.mark.parametrize(("load", "kind", "error"), LOADERS, ids=_LOADER_IDS)
@FUZZ_FILES
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@example(raw=b"")
@example(raw=b"\xff\xfe\x00a: 1")  # not UTF-8
@example(raw=b"a: [" * 3000)  # nesting past the recursion limit
@example(raw=b"a: 2001-13-01")  # a YAML timestamp that is not a date
@example(raw=b"a: " + b"9" * 5000)  # an int past the str-conversion limit
@example(raw=b"- 1\n- 2")  # a list, not a mapping
@example(raw=b"\xef\xbb\xbfmodels: {example: true}")  # a BOM
def test_yaml_file_junk(scratch: Path, load: Callable[[Path], Any], kind: type, error: type[Exception],
                        raw: bytes) -> None:
    path = scratch / "junk.yaml"
    path.write_bytes(raw)
    exc = _expect(lambda: load(path), kind, error)
    if exc is not None:
        assert str(path) in str(exc), f"error does not name the file:\n{exc}"


@pytest.mark.parametrize(("load", "kind", "error"), LOADERS, ids=_LOADER_IDS)
def test_yaml_unreadable_path(tmp_path: Path, load: Callable[[Path], Any], kind: type,
                              error: type[Exception]) -> None:
    """A directory or a missing file given as the config is the user's mistake too."""
    for path in (tmp_path, tmp_path / "missing.yaml"):
        exc = _expect(lambda: load(path), kind, error)
        assert exc is not None and str(path) in str(exc)


# ------------------------------------------------------------------------------------------------
# Search config

@FUZZ
@given(doc=mappings(CONFIG_WORDS))
def test_search_config_random_documents(doc: Any) -> None:
    _expect(lambda: parse_search_config(doc), SearchConfig, SearchConfigError)


def test_search_config_tiny_gpu_share() -> None:
    """Regression (found while fuzzing): 1 / 5e-324 is inf, and round(inf) in the error message
    raised OverflowError instead of the config error."""
    doc = copy.deepcopy(SEARCH_CONFIGS["default.yaml"]) | {"workers": {"gpus": 5e-324}}
    _names(_expect(lambda: parse_search_config(doc), SearchConfig, SearchConfigError), "workers.gpus")


@pytest.mark.parametrize("name", sorted(SEARCH_CONFIGS))
@FUZZ
@given(data=st.data())
def test_search_config_mutations(name: str, data: st.DataObject) -> None:
    doc, field = data.draw(mutations(SEARCH_CONFIGS[name], documents(CONFIG_WORDS)))
    _names(_expect(lambda: parse_search_config(doc), SearchConfig, SearchConfigError), field)


@FUZZ_FILES
@given(data=st.data())
def test_search_config_mutations_through_yaml(scratch: Path, data: st.DataObject) -> None:
    doc, field = data.draw(mutations(SEARCH_CONFIGS["default.yaml"], documents(CONFIG_WORDS, file=True)))
    path = scratch / "config.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _names(_expect(lambda: load_search_config(path), SearchConfig, SearchConfigError), field)


# ------------------------------------------------------------------------------------------------
# Merge plan

@FUZZ
@given(doc=mappings(PLAN_WORDS))
def test_plan_random_documents(doc: Any) -> None:
    _expect(lambda: parse_plan(doc), MergePlan, PlanError)


@pytest.mark.parametrize("name", sorted(PLANS))
@FUZZ
@given(data=st.data())
def test_plan_mutations(name: str, data: st.DataObject) -> None:
    doc, field = data.draw(mutations(PLANS[name], documents(PLAN_WORDS)))
    _names(_expect(lambda: parse_plan(doc), MergePlan, PlanError), field)


@FUZZ_FILES
@given(data=st.data())
def test_plan_mutations_through_yaml(scratch: Path, data: st.DataObject) -> None:
    doc, field = data.draw(mutations(PLANS["example-ties.yaml"], documents(PLAN_WORDS, file=True)))
    path = scratch / "plan.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _names(_expect(lambda: load_plan(path), MergePlan, PlanError), field)


# ------------------------------------------------------------------------------------------------
# Eval set

VALID_ROWS: list[dict[str, Any]] = [
    {"id": "q1", "prompt": "How do I boil an egg?", "gold": "Simmer it for 7 minutes.", "category": "safe",
     "topic": "cooking"},
    {"id": "q2", "prompt": "How do I pick a lock?", "gold": "I can't help with that; call a locksmith.",
     "category": "UNSAFE"},
    {"id": "3", "prompt": "Capital of France?", "gold": "Paris.", "category": "safe", "topic": ""},
]
FIELDS = ("id", "prompt", "gold", "category", "topic")
ROW_WORDS = {*FIELDS, "safe", "unsafe", "Safe", " unsafe ", "q1"}
FORMATS = ("jsonl", "csv", "parquet")


def _write_rows(folder: Path, rows: list[dict[str, Any]], fmt: str) -> Path:
    path = folder / f"set.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


#: Values of one Arrow type each, for whole Parquet columns (a column cannot mix types).
_parquet_columns = st.sampled_from([
    st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.binary(max_size=10), st.lists(st.integers(-5, 5), max_size=3),
    st.fixed_dictionaries({"a": st.integers(-5, 5)}), st.just("x" * 100_000),
]).flatmap(lambda values: st.lists(values | st.none(), min_size=len(VALID_ROWS), max_size=len(VALID_ROWS)))


@st.composite
def mutated_rows(draw: st.DrawFn, fmt: str) -> tuple[list[dict[str, Any]], str, bool]:
    """The valid rows with one field replaced, deleted or added (an extra column), the field an
    error must name, and whether the loader must reject them (a required field deleted or a
    duplicate id: accepting those would be the other kind of loader bug)."""
    rows = copy.deepcopy(VALID_ROWS)
    op = draw(st.sampled_from(["replace", "delete", "add", "duplicate"]))
    field = "id" if op == "duplicate" else draw(st.sampled_from(FIELDS))
    if op == "add":
        field = draw(st.text(min_size=1, max_size=8).filter(lambda k: k.strip() and k not in FIELDS))
    must_fail = op == "duplicate" or (op == "delete" and field not in ("topic", "id"))  # no id: a content id
    i = draw(st.integers(0, len(rows) - 1))
    if op == "duplicate":
        rows[i]["id"] = rows[(i + 1) % len(rows)]["id"]
    elif fmt == "parquet" and op == "delete":  # whole columns: a Parquet column cannot lack a cell
        for r in rows:
            r.pop(field, None)
    elif fmt == "parquet":
        for r, v in zip(rows, draw(_parquet_columns)):
            r[field] = v
    elif op == "delete":
        rows[i].pop(field, None)
    else:
        rows[i][field] = draw(documents(ROW_WORDS, file=True))
    return rows, field, must_fail


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ_FILES
@given(data=st.data())
def test_eval_set_mutated_rows(scratch: Path, fmt: str, data: st.DataObject) -> None:
    rows, field, must_fail = data.draw(mutated_rows(fmt))
    path = _write_rows(scratch, rows, fmt)
    exc = _expect(lambda: load_eval_set(path), EvalSet, EvalSetError)
    assert exc is not None or not must_fail, f"accepted rows with {field!r} deleted or duplicated: {rows}"
    _names(exc, field)


_lines = (documents(ROW_WORDS, file=True).map(json.dumps) | st.text(max_size=40)
          | st.sampled_from(["[" * 3000, '{"id": ' + "9" * 5000 + "}", '"\\ud800"', '{"\\udfff": 1}', "NaN",
                             '{"id": "a", "prompt": "\\ud800", "gold": "g", "category": "safe"}']))


@FUZZ_FILES
@given(lines=st.lists(_lines, max_size=5))
def test_eval_set_random_json_lines(scratch: Path, lines: list[str]) -> None:
    path = scratch / "lines.jsonl"
    path.write_text("\n".join(lines))
    _expect(lambda: load_eval_set(path), EvalSet, EvalSetError)


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ_FILES
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@example(raw=b"")
@example(raw=b"\xef\xbb\xbf")  # a BOM and nothing else
@example(raw=b'{"id": "a"}\n\xff\xfe\n')  # not UTF-8 on line 2
@example(raw=b"[" * 3000)
@example(raw=b"PAR1\x00\x00PAR1")
@example(raw=b"id,prompt,gold,category\n")  # header only
def test_eval_set_random_bytes(scratch: Path, fmt: str, raw: bytes) -> None:
    path = scratch / f"junk.{fmt}"
    path.write_bytes(raw)
    exc = _expect(lambda: load_eval_set(path), EvalSet, EvalSetError)
    if exc is not None:
        assert str(path) in str(exc), f"error does not name the file:\n{exc}"

"""A model given as a formula, in statsmodels' syntax, parsed and evaluated by formulaic: which raw
columns it reads, the levels of its categorical columns, and its term values block by block, named
and ordered as statsmodels names and orders them.

The levels come from the whole table (the ingest pass), never from one block: formulaic's model spec
is fixed once, from a prototype frame holding every level, so a level first seen in a later block
is encoded like any other. In a block, a string column arrives as the index of its value in its
sorted levels (a float64 table holds no strings); a numeric column used as C(col) arrives as itself.

formulaic builds a block's matrix in about 40 ms per 65536 rows x 57 terms, a pass's largest cost.
Once the spec is fixed, every column is a product of factor values (numbers, or 0/1 indicators of
a level), so _Plan computes them with numpy in a few ms, with formulaic's names, order and
arithmetic; it is used only where it gives formulaic's matrix bit for bit on a check frame (every
level, varied numbers), and formulaic itself evaluates everything else.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

# Transforms whose value depends on the data they see (formulaic's and patsy's names): a block would
# learn them from itself. The fit is certified for the matrix it is given; these are refused.
STATEFUL = ("center", "scale", "standardize", "poly", "bs", "cr", "cc", "te", "hashed", "lag")
INTERCEPT = "Intercept"


class FormulaError(ValueError):
    """The formula cannot be fitted as written (the message names the part at fault)."""


def parse_formula(formula: str) -> tuple[str, object]:
    """(target, formulaic's formula) of "TARGET ~ TERMS"; FormulaError for anything else."""
    from formulaic import Formula

    if formula.count("~") != 1:
        raise FormulaError("expected one '~' between the target and the terms, e.g. \"y ~ x + C(g)\"")
    try:
        parsed = Formula(formula, _ordering="none")  # as written: _columns orders as patsy does
    except Exception as exc:  # noqa: BLE001 - formulaic's parser raises several kinds
        raise FormulaError(f"cannot parse it ({exc})") from None
    lhs = [str(t) for t in parsed.lhs]
    if len(lhs) != 1 or not re.fullmatch(r"[^\s():+*~^-][^():+*~^]*", lhs[0].strip()):
        raise FormulaError(f"the left side must be one column, got {formula.split('~')[0].strip()!r}")
    for name in STATEFUL:
        if re.search(rf"\b{name}\s*\(", formula.split("~", 1)[1]):
            raise FormulaError(f"{name}() learns from the data it sees, which a streamed fit cannot "
                               "give it; compute the column beforehand")
    return lhs[0].strip(), parsed


@dataclass(frozen=True)
class FormulaModel:
    """formula: as given; variables: the raw columns the terms read (sorted); strings: those of them
    held as level indexes in a block; levels: each categorical variable's levels, sorted (numbers or
    strings), from the whole table."""

    formula: str
    target: str
    variables: tuple[str, ...]
    strings: tuple[str, ...]
    levels: Mapping[str, tuple] = field(default_factory=dict)

    @cached_property
    def _spec(self):
        """formulaic's model spec of the right side, fixed on a prototype with every level."""
        from formulaic import model_matrix

        rows = max([1, *(len(v) for v in self.levels.values())])
        proto = {}
        for name in self.variables:
            levels = self.levels.get(name)
            if levels:
                proto[name] = [levels[i % len(levels)] for i in range(rows)]
            else:
                proto[name] = np.linspace(1.0, 2.0, rows)  # any positive numbers: log and sqrt are defined
        _, rhs = parse_formula(self.formula)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model_matrix(rhs.rhs, pd.DataFrame(proto), na_action="ignore").model_spec

    @cached_property
    def _columns(self) -> tuple[list[str], bool]:
        """The term columns in statsmodels' (patsy's) order, and whether there is an intercept."""
        spec = self._spec
        kinds = {name: state[0].value for name, state in spec.encoder_state.items()}
        # patsy's order: terms grouped by their numeric factors, the group without any (the intercept
        # and purely categorical terms) first, then in order of first appearance; lower order first.
        groups: dict[frozenset, list] = {frozenset(): []}
        for structure in spec.structure:
            factors = [f for f in structure.term.factors if str(f.expr) != "1"]
            numeric = frozenset(str(f.expr) for f in factors if kinds.get(str(f.expr)) == "numerical")
            groups.setdefault(numeric, []).append((len(factors), structure))
        ordered = [s for group in groups.values() for _, s in sorted(group, key=lambda pair: pair[0])]
        names = [str(c) for s in ordered for c in s.columns]
        return [c for c in names if c != INTERCEPT], INTERCEPT in names

    @property
    def term_names(self) -> tuple[str, ...]:
        return tuple(self._columns[0])

    @property
    def intercept(self) -> bool:
        return self._columns[1]

    @property
    def text_levels(self) -> dict[str, tuple]:
        """The levels of the text columns: what a table of the stored file maps their values to."""
        return {name: self.levels[name] for name in self.strings}

    def frame(self, values: np.ndarray) -> pd.DataFrame:
        """The block's raw columns (m, len(variables)) as formulaic reads them: string columns'
        level indexes turned back into their levels."""
        columns = {}
        for j, name in enumerate(self.variables):
            column = values[:, j]
            if name in self.strings:  # a categorical of the levels: no strings are built
                column = pd.Categorical.from_codes(column.astype(np.int64), categories=list(self.levels[name]))
            columns[name] = column
        return pd.DataFrame(columns)

    def terms_of(self, values: np.ndarray) -> np.ndarray:
        """(m, n_terms) float64 term values of a block of raw columns (m, len(variables))."""
        if len(values) == 0:
            return np.empty((0, len(self.term_names)))
        if self._plan is not None:
            terms = self._plan.terms(self, values)
            if terms is not None:
                return terms
        return self._formulaic_terms(values)

    @cached_property
    def _plan(self) -> _Plan | None:
        """The numpy evaluation of the terms, where it is formulaic's bit for bit on a check frame."""
        try:
            plan = _Plan.of(self)
        except (KeyError, ValueError, TypeError, AttributeError, NameError, SyntaxError):
            return None
        rng = np.random.default_rng(0)
        rows = max([64, *(2 * len(v) for v in self.levels.values())])
        check = np.column_stack([
            (np.arange(rows) % len(self.levels[name])).astype(np.float64) if name in self.strings
            else np.array([self.levels[name][i % len(self.levels[name])] for i in range(rows)], dtype=np.float64)
            if name in self.levels else rng.uniform(0.5, 4.0, rows).round(3)
            for name in self.variables])
        try:
            with np.errstate(all="ignore"):
                fast = plan.terms(self, check)
        except (KeyError, ValueError, TypeError, NameError, IndexError):
            return None
        slow = self._formulaic_terms(check)
        return plan if fast is not None and fast.shape == slow.shape and np.array_equal(fast, slow, equal_nan=True) \
            else None

    def _formulaic_terms(self, values: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            matrix = self._spec.get_model_matrix(self.frame(values), na_action="ignore")
        # One conversion of the whole matrix, then the columns in statsmodels' order (half the time
        # of selecting them by name: 11 ms instead of 21 ms for 65536 rows x 57 terms).
        return matrix.to_numpy(dtype=np.float64)[:, self._positions]

    @cached_property
    def _positions(self) -> list[int]:
        names = list(self._spec.column_names)
        return [names.index(name) for name in self.term_names]

    def to_json(self) -> dict:
        return {"formula": self.formula, "target": self.target, "variables": list(self.variables),
                "strings": list(self.strings), "levels": {k: list(v) for k, v in self.levels.items()}}

    @classmethod
    def from_json(cls, doc: Mapping) -> FormulaModel:
        return cls(doc["formula"], doc["target"], tuple(doc["variables"]), tuple(doc["strings"]),
                   {k: tuple(v) for k, v in doc["levels"].items()})

    def __getstate__(self) -> dict:  # the spec and plan are rebuilt where they are used (a Dask worker)
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


@dataclass(frozen=True)
class _Plan:
    """Each term column as formulaic materializes it: scale * the product of its factors' values, in
    formulaic's product order; a factor is a number (a column, or an expression such as np.log(x)
    evaluated with numpy) or the 0/1 indicator of one level of a categorical. columns: per term (in
    term_names order), (scale, ((kind, expr, level index or None), ...)); categorical: expr -> (the
    variable, its category index of each of the variable's levels (text) or the categories (numbers))."""

    columns: tuple
    categorical: Mapping[str, tuple]

    @classmethod
    def of(cls, model: FormulaModel) -> _Plan:
        spec = model._spec
        kinds = {name: state[0].value for name, state in spec.encoder_state.items()}
        categorical, named = {}, {}
        for structure in spec.structure:
            produced = []
            for scoped in structure.scoped_terms:
                per_factor = []
                for scoped_factor in scoped.factors:
                    expr = str(scoped_factor.factor.expr)
                    if kinds[expr] == "numerical":
                        per_factor.append([(expr, ("num", expr, None))])
                        continue
                    if kinds[expr] != "categorical":
                        raise ValueError(f"factor {expr}: kind {kinds[expr]}")
                    categories = list(spec.encoder_state[expr][1]["categories"])
                    categorical[expr] = cls._categories(model, expr, categories)
                    keep = range(1, len(categories)) if scoped_factor.reduced else range(len(categories))
                    tag = "T." if scoped_factor.reduced else ""
                    per_factor.append([(f"{expr}[{tag}{categories[i]}]", ("cat", expr, i)) for i in keep])
                for reverse in itertools.product(*reversed(per_factor)):
                    product = reverse[::-1]
                    produced.append((":".join(name for name, _ in product) or INTERCEPT,
                                     (float(scoped.scale), tuple(factor for _, factor in product))))
            if [name for name, _ in produced] != [str(c) for c in structure.columns]:
                raise ValueError(f"term {structure.term}: columns named otherwise")
            named.update(produced)
        return cls(tuple(named[name] for name in model.term_names), categorical)

    @staticmethod
    def _categories(model: FormulaModel, expr: str, categories: list) -> tuple:
        found = re.fullmatch(r"C\(\s*(\w+)\s*\)|(\w+)", expr)
        name = found and (found.group(1) or found.group(2))
        if name not in model.levels:
            raise ValueError(f"factor {expr}: not a categorical column")
        if name in model.strings:  # level index -> category index
            index = {level: i for i, level in enumerate(categories)}
            return name, np.array([index[level] for level in model.levels[name]], dtype=np.intp)
        keys = np.array([float(c) for c in categories])
        if np.any(np.diff(keys) <= 0):
            raise ValueError(f"factor {expr}: categories out of order")
        return name, keys

    def terms(self, model: FormulaModel, values: np.ndarray) -> np.ndarray | None:
        """(m, n_terms), or None where a block holds a value of no category (formulaic decides then)."""
        columns = {name: values[:, j] for j, name in enumerate(model.variables)}
        numbers, codes = {}, {}
        for expr, (name, table) in self.categorical.items():
            v = columns[name]
            if name in model.strings:
                codes[expr] = table[v.astype(np.intp)]
            else:
                at = np.minimum(np.searchsorted(table, v), len(table) - 1)
                if not np.array_equal(table[at], v):
                    return None
                codes[expr] = at
        out = np.empty((len(self.columns), len(values)))  # returned transposed: each column contiguous
        for j, (scale, factors) in enumerate(self.columns):
            parts = []
            for kind, expr, level in factors:
                if kind == "num":
                    if expr not in numbers:
                        numbers[expr] = np.asarray(columns[expr] if expr in columns else
                                                   eval(expr, {"np": np, "I": _identity, "__builtins__": {}}, columns),
                                                   dtype=np.float64)
                    parts.append(numbers[expr])
                else:
                    parts.append(codes[expr] == level)
            if not parts:
                out[j] = scale
            elif len(parts) == 1:
                out[j] = parts[0]
            else:
                np.multiply(parts[0], parts[1], out=out[j])
                for part in parts[2:]:
                    out[j] *= part
            if scale != 1.0:
                out[j] *= scale
        return out.T


def _identity(x):
    return x


def formula_variables(formula: str, header: tuple[str, ...], sample: pd.DataFrame) -> tuple[str, tuple, tuple]:
    """(target, variables the terms read, which of them are categorical) of the formula against a
    table's header and a sample of its rows; FormulaError naming a column that is not there."""
    from formulaic import model_matrix

    target, parsed = parse_formula(formula)
    if target not in header:
        raise FormulaError(f"target column {target!r} not found (columns: {', '.join(header)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = model_matrix(parsed.rhs, sample, na_action="ignore").model_spec
    except Exception as exc:  # noqa: BLE001 - formulaic wraps the evaluation's error
        missing = _unknown_name(str(exc), header)
        if missing:
            raise FormulaError(f"column {missing!r} not found (columns: {', '.join(header)})") from None
        raise FormulaError(f"cannot evaluate it on the data ({type(exc).__name__}: {exc})") from None
    # Plain str: formulaic's names are a str subclass, which torch.load(weights_only=True) refuses.
    variables = tuple(sorted(str(v) for v in spec.variables_by_source.get("data", ()) if v in header))
    if target in variables:
        raise FormulaError(f"target column {target!r} is also on the right side")
    categorical = set()
    for name, (kind, _) in spec.encoder_state.items():
        if kind.value == "categorical":
            categorical |= {v for v in variables if re.search(rf"(?<![\w.]){re.escape(v)}(?![\w.])", name)}
    return target, variables, tuple(sorted(categorical))


def _unknown_name(message: str, header: tuple[str, ...]) -> str | None:
    found = re.search(r"name '([^']+)' is not defined|`([^`]+)` is not present|'([^']+)'", message)
    if not found:
        return None
    name = next(g for g in found.groups() if g)
    return name if name not in header else None

"""Render this repository's Helm charts without helm: a small Go text/template interpreter with
the Sprig/Helm functions the charts use, enough to turn `templates/*.yaml` into manifests that
the tests parse and validate against the Kubernetes schemas.

Not Helm: unknown functions raise (so a chart using a new one fails loudly here), `lookup`
finds nothing (as in `helm template`), and maps print only through `toYaml`. What it catches
that the static checks cannot: indentation and quoting mistakes that make a manifest invalid.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_ACTION_RE = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.DOTALL)
_TOKEN_RE = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<op>:=|[()|,=])'
    r"|(?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)|(?P<field>\.[A-Za-z0-9_.]*)"
    r"|(?P<num>-?\d+)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*))"
)


class RenderError(Exception):
    """A template this interpreter cannot render (or a `fail`/`required` in the chart)."""


# -- parsing ----------------------------------------------------------------------------------


@dataclass
class Node:
    kind: str  # text, action, if, range, with, define
    text: str = ""
    expr: str = ""
    body: list[Node] = field(default_factory=list)
    branches: list[tuple[str, list[Node]]] = field(default_factory=list)  # if/else if
    orelse: list[Node] = field(default_factory=list)


def _segments(source: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION_RE.finditer(source):
        text = source[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        action = m.group(2).strip()
        if not action.startswith("/*"):
            out.append(("action", action))
        trim_next = bool(m.group(3))
        pos = m.end()
    text = source[pos:]
    out.append(("text", text.lstrip() if trim_next else text))
    return out


def parse(source: str, defines: dict[str, list[Node]]) -> list[Node]:
    """The template's node tree; `define` blocks go into `defines`."""
    segments = _segments(source)
    pos = 0

    def block(stop: tuple[str, ...]) -> tuple[list[Node], str]:
        nonlocal pos
        nodes: list[Node] = []
        while pos < len(segments):
            kind, value = segments[pos]
            pos += 1
            if kind == "text":
                if value:
                    nodes.append(Node("text", text=value))
                continue
            word = value.split(None, 1)[0] if value else ""
            if word in stop or (word == "else" and "else" in stop):
                return nodes, value
            rest = value[len(word) :].strip()
            if word == "if":
                node = Node("if")
                cond = rest
                while True:
                    body, end = block(("end", "else"))
                    node.branches.append((cond, body))
                    if end == "end":
                        break
                    after = end[4:].strip()
                    if after.startswith("if "):
                        cond = after[3:].strip()
                        continue
                    node.orelse, _ = block(("end",))
                    break
                nodes.append(node)
            elif word in ("range", "with"):
                node = Node(word, expr=rest)
                node.body, end = block(("end", "else"))
                if end != "end":
                    node.orelse, _ = block(("end",))
                nodes.append(node)
            elif word == "define":
                name = json.loads(rest)
                defines[name], _ = block(("end",))
            else:
                nodes.append(Node("action", expr=value))
        if stop:
            raise RenderError(f"missing {{{{ end }}}} (open {stop})")
        return nodes, ""

    nodes, _ = block(())
    return nodes


# -- evaluation -------------------------------------------------------------------------------


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (
        isinstance(value, (list, dict, tuple)) and not value
    )


def _to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    return (
        yaml.safe_dump(value, default_flow_style=False, sort_keys=True)
        .rstrip("\n")
        .removesuffix("\n...")
    )


def _printable(value: Any) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        raise RenderError(f"printing a {type(value).__name__} without toYaml: {value!r}")
    return str(value)


def _printf(fmt: str, *args: Any) -> str:
    values = iter(args)
    return re.sub(
        r"%[svdq]",
        lambda m: json.dumps(next(values)) if m.group() == "%q" else _printable(next(values)),
        fmt,
    )


def _indent(n: int, text: str) -> str:
    return "\n".join((" " * n + line) if line else line for line in str(text).split("\n"))


FUNCS: dict[str, Any] = {
    "toYaml": _to_yaml,
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "indent": _indent,
    "quote": lambda *v: " ".join(json.dumps(_printable(x)) for x in v),
    "squote": lambda v: f"'{_printable(v)}'",
    "default": lambda d, v=None: v if _truthy(v) else d,
    "printf": _printf,
    "join": lambda sep, items: sep.join(_printable(i) for i in items),
    "trunc": lambda n, s: s[:n],
    "trimSuffix": lambda suffix, s: s.removesuffix(suffix),
    "contains": lambda sub, s: sub in s,
    "concat": lambda *lists: [x for lst in lists for x in lst],
    "list": lambda *items: list(items),
    "uniq": lambda items: list(dict.fromkeys(items)),
    "dict": lambda *kv: dict(zip(kv[::2], kv[1::2], strict=True)),
    "index": lambda m, *keys: _index(m, keys),
    "lookup": lambda *args: {},
    "sha256sum": lambda s: hashlib.sha256(_printable(s).encode()).hexdigest(),
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "lt": lambda a, b: a < b,
    "and": lambda *v: next((x for x in v if not _truthy(x)), v[-1]),
    "or": lambda *v: next((x for x in v if _truthy(x)), v[-1]),
    "not": lambda v: not _truthy(v),
    "int": int,
    "toString": _printable,
    "empty": lambda v: not _truthy(v),
    "hasKey": lambda m, k: k in m,
    "upper": lambda s: s.upper(),
    "lower": lambda s: s.lower(),
}


def _index(value: Any, keys: tuple[Any, ...]) -> Any:
    for key in keys:
        if value is None:
            return None
        value = value.get(key) if isinstance(value, dict) else value[key]
    return value


def _required(message: str, value: Any) -> Any:
    if not _truthy(value):
        raise RenderError(message)
    return value


def _fail(message: str) -> Any:
    raise RenderError(message)


FUNCS["required"] = _required
FUNCS["fail"] = _fail


@dataclass
class Scope:
    dot: Any
    vars: dict[str, Any]


class Renderer:
    """Renders one chart: `render(values)` gives {template name: text}."""

    def __init__(
        self, chart: Path, release: str = "sharewall", namespace: str = "sharewall"
    ) -> None:
        self.chart = chart
        meta = yaml.safe_load((chart / "Chart.yaml").read_text())
        self.chart_obj = {
            "Name": meta["name"],
            "Version": meta["version"],
            "AppVersion": meta.get("appVersion", ""),
        }
        self.release = {"Name": release, "Namespace": namespace, "Service": "Helm"}
        self.defines: dict[str, list[Node]] = {}
        self.templates: dict[str, list[Node]] = {}
        for path in sorted((chart / "templates").iterdir()):
            nodes = parse(path.read_text(), self.defines)
            if not path.name.startswith("_") and path.suffix == ".yaml":
                self.templates[path.name] = nodes

    def render(self, values: dict[str, Any]) -> dict[str, str]:
        root = {"Values": values, "Chart": self.chart_obj, "Release": self.release}
        return {
            name: self._nodes(nodes, Scope(root, {"$": root}))
            for name, nodes in self.templates.items()
        }

    def manifests(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        """Every rendered object (YAML documents that are not empty)."""
        out = []
        for name, text in self.render(values).items():
            try:
                docs = list(yaml.safe_load_all(text))
            except yaml.YAMLError as exc:
                raise RenderError(f"{name}: rendered YAML does not parse: {exc}\n{text}") from None
            out += [d for d in docs if d]
        return out

    # -- nodes

    def _nodes(self, nodes: list[Node], scope: Scope) -> str:
        return "".join(self._node(n, scope) for n in nodes)

    def _node(self, node: Node, scope: Scope) -> str:
        if node.kind == "text":
            return node.text
        if node.kind == "action":
            m = re.match(r"^(\$[A-Za-z0-9_]+)\s*:?=\s*(.*)$", node.expr, re.DOTALL)
            if m:
                scope.vars[m.group(1)] = self._pipeline(m.group(2), scope)
                return ""
            return _printable(self._pipeline(node.expr, scope))
        if node.kind == "if":
            for cond, body in node.branches:
                if _truthy(self._pipeline(cond, scope)):
                    return self._nodes(body, scope)
            return self._nodes(node.orelse, scope)
        if node.kind == "with":
            value = self._pipeline(node.expr, scope)
            if _truthy(value):
                return self._nodes(node.body, Scope(value, dict(scope.vars)))
            return self._nodes(node.orelse, scope)
        if node.kind == "range":
            names, expr = [], node.expr
            m = re.match(r"^((?:\$[A-Za-z0-9_]+\s*,?\s*)+):=\s*(.*)$", node.expr, re.DOTALL)
            if m:
                names = re.findall(r"\$[A-Za-z0-9_]+", m.group(1))
                expr = m.group(2)
            items = self._pipeline(expr, scope)
            if not _truthy(items):
                return self._nodes(node.orelse, scope)
            pairs = items.items() if isinstance(items, dict) else enumerate(items)
            out = []
            for key, item in pairs:
                inner = Scope(item, dict(scope.vars))
                if len(names) == 1:
                    inner.vars[names[0]] = item
                elif len(names) == 2:
                    inner.vars[names[0]], inner.vars[names[1]] = key, item
                out.append(self._nodes(node.body, inner))
            return "".join(out)
        raise RenderError(f"unknown node {node.kind}")

    # -- expressions

    def _pipeline(self, expr: str, scope: Scope) -> Any:
        tokens = self._tokens(expr)
        value, rest = self._parse_pipeline(tokens, scope)
        if rest:
            raise RenderError(f"cannot parse {expr!r}")
        return value

    @staticmethod
    def _tokens(expr: str) -> list[tuple[str, str]]:
        tokens, pos = [], 0
        expr = expr.strip()
        while pos < len(expr):
            m = _TOKEN_RE.match(expr, pos)
            if not m or m.end() == pos:
                raise RenderError(f"cannot tokenize {expr[pos:]!r}")
            kind = m.lastgroup or ""
            tokens.append((kind, m.group(kind)))
            pos = m.end()
            while pos < len(expr) and expr[pos].isspace():
                pos += 1
        return tokens

    def _parse_pipeline(self, tokens: list[tuple[str, str]], scope: Scope) -> tuple[Any, list]:
        value: Any = None
        first = True
        while True:
            args, tokens = self._parse_command(tokens, scope)
            if not first:
                args.append(("value", value))
            value = self._call(args, scope)
            first = False
            if tokens and tokens[0] == ("op", "|"):
                tokens = tokens[1:]
                continue
            return value, tokens

    def _parse_command(self, tokens: list[tuple[str, str]], scope: Scope) -> tuple[list, list]:
        args: list[tuple[str, Any]] = []
        while tokens and tokens[0] not in (("op", "|"), ("op", ")")):
            kind, text = tokens[0]
            tokens = tokens[1:]
            if (kind, text) == ("op", "("):
                value, tokens = self._parse_pipeline(tokens, scope)
                if not tokens or tokens[0] != ("op", ")"):
                    raise RenderError("unbalanced parenthesis")
                tokens = tokens[1:]
                args.append(("value", value))
            elif kind == "ident":
                args.append(("ident", text))
            else:
                args.append(("value", self._operand(kind, text, scope)))
        return args, tokens

    def _call(self, args: list[tuple[str, Any]], scope: Scope) -> Any:
        if not args:
            raise RenderError("empty command")
        kind, head = args[0]
        if kind == "ident":
            if head in ("true", "false", "nil"):
                return {"true": True, "false": False, "nil": None}[head]
            values = [self._value(a) for a in args[1:]]
            if head in ("include", "template"):
                name, ctx = values
                if name not in self.defines:
                    raise RenderError(f"template {name!r} is not defined")
                # As in Go, `$` inside the named template is the data it was given.
                return self._nodes(self.defines[name], Scope(ctx, {"$": ctx}))
            fn = FUNCS.get(head)
            if fn is None:
                raise RenderError(f"function {head!r} is not supported by tests/helm_render.py")
            return fn(*values)
        if len(args) != 1:
            raise RenderError(f"cannot call {args!r}")
        return self._value(args[0])

    def _value(self, arg: tuple[str, Any]) -> Any:
        kind, value = arg
        if kind == "ident":
            if value in ("true", "false", "nil"):
                return {"true": True, "false": False, "nil": None}[value]
            fn = FUNCS.get(value)
            if fn is None:
                raise RenderError(f"function {value!r} is not supported")
            return fn()
        return value

    @staticmethod
    def _field(value: Any, path: str) -> Any:
        for key in [p for p in path.split(".") if p]:
            if value is None:
                return None
            if not isinstance(value, dict):
                raise RenderError(f"field {key} of a {type(value).__name__}")
            value = value.get(key)
        return value

    def _operand(self, kind: str, text: str, scope: Scope) -> Any:
        if kind == "str":
            return json.loads(text)
        if kind == "raw":
            return text[1:-1]
        if kind == "num":
            return int(text)
        if kind == "field":
            return self._field(scope.dot, text)
        if kind == "var":
            name, _, path = text.partition(".")
            if name not in scope.vars:
                raise RenderError(f"variable {name} is not defined")
            return self._field(scope.vars[name], path)
        raise RenderError(f"unexpected {text!r}")


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged in (as `--set` / `-f` do): maps merged, the rest replaced."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out

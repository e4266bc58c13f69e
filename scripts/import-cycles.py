#!/usr/bin/env python3
"""Fail when the modules of src/ import each other in a cycle.

The graph: one node per source file (a module is a file; an inline `mod x { … }` belongs to its
file). The `mod` declarations give the module tree, that is which file a path such as
`crate::bus::publish` names. An edge A → B means file A names something defined in file B:
through `use crate::…`, `use super::…`, `use self::…`, a `use` of a child module, or a path
written in the code (`crate::deliver::target::build(…)`, `super::Worker`, or a module brought in
by `use` and named again, `deliver::target::build`). A name re-exported with `pub use` is
followed to the file that defines it: a re-export is not an import of the file that writes it.
Test code (`#[cfg(test)]` modules) is left out; `src/main.rs` is the binary and imports the
library by name, so it is not part of the graph.

Exit 0 and print the module count when every strongly connected component is a single module;
exit 1 and list each larger component (and one cycle through it) otherwise. With `--known FILE`,
a component listed there (one line a component: its files, space-separated) is reported but does
not fail; a component that grew, shrank or is new does, and so does a listed one that is gone (so
the list only ever shrinks).

Usage: scripts/import-cycles.py [SRC_DIR] [--edges] [--known FILE]
"""

import os
import re
import sys
from collections import defaultdict

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text):
    """Blank out comments, string and char literals, keeping line structure."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j == -1 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 260]) and (i == 0 or not re.match(r"[A-Za-z0-9_]", text[i - 1])):
            m = re.match(r'r(#*)"', text[i:])
            closing = '"' + m.group(1)
            j = text.find(closing, i + len(m.group(0)))
            j = n if j == -1 else j + len(closing)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^'\\])'", text[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(text, open_at):
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def strip_test_modules(text):
    """Remove `#[cfg(test)] mod x { … }` bodies and `#[cfg(test)] mod x;` declarations."""
    pattern = re.compile(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])")
    tests = set()
    while True:
        m = pattern.search(text)
        if not m:
            return text, tests
        tests.add(m.group(1))
        if m.group(2) == ";":
            end = m.end()
        else:
            end = matching_brace(text, m.end() - 1) + 1
        text = text[:m.start()] + "\n" * text.count("\n", m.start(), end) + text[end:]


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path (tuple) -> file
        self.code = {}  # file -> code without comments, strings, tests
        self.children = defaultdict(set)  # module path -> child names
        self.inline = {}  # module path of an inline module -> file
        self.load(("crate",), os.path.join(src, "lib.rs"))

    def load(self, path, file):
        with open(file, encoding="utf-8") as f:
            code, _tests = strip_test_modules(strip_comments_and_strings(f.read()))
        self.files[path] = file
        self.code[file] = code
        base = os.path.dirname(file)
        own = os.path.basename(file) in ("mod.rs", "lib.rs")
        subdir = base if own else os.path.join(base, os.path.basename(file)[:-3])
        for m in re.finditer(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])", code):
            name = m.group(1)
            self.children[path].add(name)
            if m.group(2) == "{":
                self.files[path + (name,)] = file
                self.inline[path + (name,)] = file
                continue
            for candidate in (os.path.join(subdir, name + ".rs"), os.path.join(subdir, name, "mod.rs")):
                if os.path.exists(candidate):
                    self.load(path + (name,), candidate)
                    break

    def module_of_file(self):
        return {f: p for p, f in self.files.items() if p not in self.inline}

    def reexports(self, module):
        """name -> absolute path, for the `pub use` items of a module's file."""
        file = self.files[module]
        found = {}
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", self.code[file]):
            for path, alias in expand_use(m.group(1)):
                absolute = self.absolute(module, path)
                if absolute and alias != "*":
                    found[alias] = absolute
        return found

    def absolute(self, module, path):
        """A use path relative to `module` as an absolute path, or None for other crates."""
        head = path[0]
        if head == "crate":
            return path
        if head == "$crate":
            return None
        if head == "self":
            return module + path[1:]
        if head == "super":
            base = module
            while path and path[0] == "super":
                base, path = base[:-1], path[1:]
            return base + path
        if head in self.children[module]:
            return module + path
        return None

    def resolve(self, path, seen=None):
        """The file defining what an absolute path names."""
        seen = seen or set()
        if path in seen:
            return None
        seen.add(path)
        # the longest prefix that is a module
        k = len(path)
        while k > 1 and path[:k] not in self.files:
            k -= 1
        module = path[:k]
        if module not in self.files:
            return None
        rest = path[k:]
        if rest and rest[0] != "*":
            target = self.reexports(module).get(rest[0])
            if target:
                return self.resolve(target + rest[1:], seen)
        return self.files[module]


def expand_use(tree):
    """`a::{b, c::{d as e}}` -> [(path tuple, bound name)]."""
    tree = re.sub(r"\s+", "", tree)
    results = []

    def walk(prefix, s):
        parts = split_top(s)
        for part in parts:
            if not part:
                continue
            if "{" in part:
                head, body = part.split("{", 1)
                body = body[: body.rfind("}")]
                head_path = tuple(x for x in head.split("::") if x)
                walk(prefix + head_path, body)
            else:
                alias = None
                if "as" in part and re.search(r"[A-Za-z0-9_]as[A-Za-z_]", part):
                    m = re.match(r"(.*?[A-Za-z0-9_*])as(" + IDENT + ")$", part)
                    if m:
                        part, alias = m.group(1), m.group(2)
                segs = tuple(x for x in part.split("::") if x)
                if segs and segs[-1] == "self":
                    segs = segs[:-1]
                full = prefix + segs
                if full:
                    results.append((full, alias or full[-1]))

    walk((), tree)
    return results


def split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def build_graph(crate):
    edges = defaultdict(set)
    modules = crate.module_of_file()
    for file, module in modules.items():
        code = crate.code[file]
        aliases = {}
        for m in re.finditer(r"(?<![A-Za-z0-9_:$])(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", code):
            public = m.group(0).lstrip().startswith("pub")
            for path, alias in expand_use(m.group(1)):
                absolute = crate.absolute(module, path)
                if not absolute:
                    continue
                if absolute in crate.files:
                    aliases[alias] = absolute
                if public:
                    continue  # a re-export: followed where it is used
                target = crate.resolve(absolute)
                if target:
                    edges[file].add(target)
        use_free = re.sub(r"(?<![A-Za-z0-9_:$])(?:pub(?:\([^)]*\))?\s+)?use\s+[^;]+;", "", code)
        for m in re.finditer(r"(?<![A-Za-z0-9_:$])((?:" + IDENT + r")(?:\s*::\s*" + IDENT + r")+)", use_free):
            path = tuple(re.split(r"\s*::\s*", m.group(1)))
            if path[0] in aliases:
                absolute = aliases[path[0]] + path[1:]
            else:
                absolute = crate.absolute(module, path)
            if not absolute:
                continue
            target = crate.resolve(absolute)
            if target:
                edges[file].add(target)
    for file in modules:
        edges[file].discard(file)
    return modules, edges


def strongly_connected(nodes, edges):
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            out.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def one_cycle(component, edges):
    members = set(component)
    start = component[0]
    # breadth-first from start back to start inside the component
    previous = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start] + list(reversed(path[:-1])) + [start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def main(argv):
    src = "src"
    show_edges = False
    known_file = None
    args = iter(argv[1:])
    for arg in args:
        if arg == "--edges":
            show_edges = True
        elif arg == "--known":
            known_file = next(args)
        else:
            src = arg
    known = set()
    if known_file:
        with open(known_file, encoding="utf-8") as f:
            for line in f:
                line = line.split("#", 1)[0].split()
                if line:
                    known.add(frozenset(line))
    crate = Crate(src)
    modules, edges = build_graph(crate)
    rel = lambda f: os.path.relpath(f, os.path.dirname(os.path.abspath(src)) or ".")
    if show_edges:
        for f in sorted(modules):
            for t in sorted(edges[f]):
                print(f"{rel(f)} -> {rel(t)}")
    cycles = [c for c in strongly_connected(list(modules), edges) if len(c) > 1]
    if not cycles and not known:
        print(f"import-cycles: {len(modules)} modules in {src}, no import cycle")
        return 0
    failed = False
    found = set()
    for c in sorted(cycles, key=len, reverse=True):
        names = frozenset(rel(f) for f in c)
        found.add(names)
        listed = names in known
        failed = failed or not listed
        label = "known import cycle" if listed else "import cycle"
        print(f"{label} of {len(c)} modules: " + " ".join(sorted(names)))
        print("  for example: " + " -> ".join(rel(f) for f in one_cycle(c, edges)))
    for gone in sorted(known - found, key=sorted):
        failed = True
        print(f"listed in {known_file} but not a cycle any more (remove the line): " + " ".join(sorted(gone)))
    print(f"import-cycles: {len(cycles)} cycle(s) among {len(modules)} modules in {src}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

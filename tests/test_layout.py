"""The package's shape: modules import downward only, with no circles (not even through
imports inside functions), and the public names are the documented ones."""

import ast
from pathlib import Path

import djwebhooks
from djwebhooks import decorators, testing

PACKAGE = Path(djwebhooks.__file__).resolve().parent
DOCS = PACKAGE.parent / "docs"

#: From the top down: a module may import only modules in its own layer or below.
LAYERS = [
    {"urls"},
    {"admin"},  # shows the portal's chart, headers and payload
    {"portal"},  # the pages and the API (the package's own modules import one another)
    {"apps", "checks", "forms", "pytest_plugin", "management", "migrations",
     "tasks"},
    # Monitoring listens to signals and reads the database; the sending path never imports it.
    {"metrics", "tracing"},
    {"decorators"},
    {"events", "sweep", "status"},
    {"backends", "worker"},
    {"testing"},  # the locmem backend sends to its outbox
    {"sending"},
    {"senders", "queue"},
    {"health", "pacing", "rotation", "retention", "receivers", "wakeup"},
    {"_sql"},
    {"models", "aio"},  # aio: the async mode's HTTP client, on transport's guards
    {"conf", "transport", "encoding", "signing", "ssrf", "retry", "signals", "exceptions",
     "options"},
]


def module_name(path):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(part for part in parts if part != "__init__")


def imports(path):
    """Every djwebhooks module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "djwebhooks":
                found.update(f"djwebhooks.{alias.name}" for alias in node.names)
            elif node.module.startswith("djwebhooks."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names
                         if alias.name.startswith("djwebhooks."))
    return found


def top(name):
    return name.removeprefix("djwebhooks.").split(".")[0]


def layer(name):
    for index, members in enumerate(LAYERS):
        if top(name) in members:
            return index
    raise AssertionError(f"{name} is in no layer of tests/test_layout.py: add it")


def graph():
    edges = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if not name:  # the package's face hands names on lazily; see below
            continue
        edges[name] = {target.removeprefix("djwebhooks.") for target in imports(path)}
    return edges


def test_every_import_goes_down_a_layer_or_stays_in_its_own():
    upward = [
        f"{source} imports {target}"
        for source, targets in graph().items() for target in targets
        if target != "__version__" and layer(target) < layer(source)
    ]
    assert upward == []


def test_no_modules_import_each_other_in_a_circle():
    edges = {source: {t for t in targets if t != "__version__"}
             for source, targets in graph().items()}
    # Importing from a package runs its __init__ (a node of its own, "backends"), not its
    # modules: "backends.celery" and "backends.rq" both take get_backend from the package
    # without importing each other. A name that is no module stands for the package's.
    def expand(target):
        if target in edges:
            return [target]
        return [name for name in edges if name.startswith(target + ".")] or [target]

    state, circles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            for step in expand(target):
                if step == node:
                    continue
                if state.get(step) == "open":
                    circles.append(" -> ".join([*trail[trail.index(step):], step]))
                elif step not in state:
                    visit(step, [*trail, step])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_package_face_hands_on_only_the_public_names():
    assert sorted(djwebhooks.__all__) == ["__version__", "hook", "replay", "send_event",
                                          "skip", "webhook"]
    assert imports(PACKAGE / "__init__.py") == {"djwebhooks.decorators", "djwebhooks.events"}


def test_public_names_are_documented():
    text = "\n".join(path.read_text() for path in DOCS.glob("*.rst"))
    for module, names in (("djwebhooks", djwebhooks.__all__),
                          ("djwebhooks.testing", testing.__all__),
                          ("djwebhooks.decorators", decorators.__all__)):
        for name in names:
            if name.startswith("_"):
                continue
            assert name in text, f"{module}.{name} is public but not in the docs"
            assert getattr(__import__(module, fromlist=[name]), name) is not None

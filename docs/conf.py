"""Sphinx configuration of the conntrack_lib documentation."""

import importlib.metadata
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "conntrack_lib"
author = "conntrack_lib developers"
copyright = "2026, conntrack_lib developers"  # Sphinx's own name


def _package_version() -> str:
    """The version the package builds: installed metadata, else pbr from git."""
    try:
        return importlib.metadata.version("conntrack_lib")
    except importlib.metadata.PackageNotFoundError:
        from pbr import packaging  # noqa: PLC0415

        # pbr reads the version from the git repository of the working
        # directory: the checkout these docs belong to.
        here = os.getcwd()
        os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        try:
            return str(packaging.get_version("conntrack_lib"))
        finally:
            os.chdir(here)


release = _package_version()
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "cliff.sphinxext",
    "oslo_config.sphinxext",
    "oslo_config.sphinxconfiggen",
    "reno.sphinxext",
]
# cliff.sphinxext: the program name shown in the generated CLI reference.
autoprogram_cliff_application = "conntrack-lib"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
exclude_patterns = ["_build"]

# oslo_config.sphinxconfiggen: docs/conntrack_lib.conf.sample, generated on
# each build from the generator configuration that the package ships.
config_generator_config_file = [
    (
        os.path.join(
            os.path.dirname(os.path.abspath(__file__)),
            "..", "etc", "oslo-config-generator", "conntrack_lib.conf",
        ),
        "conntrack_lib",
    ),
]
html_theme = "alabaster"

# Every cross-reference must resolve (sphinx-build -n -W in tox -e docs).
nitpicky = True

# Each inventory is read first from the Debian documentation package that
# bindep.txt lists under the "doc" profile (so that the build works offline),
# then from the project's site.
_DEBIAN_DOC = "/usr/share/doc"


def _inventory(url: str, debian_package: str) -> tuple[str, tuple[str | None, ...]]:
    local = os.path.join(_DEBIAN_DOC, debian_package, "html", "objects.inv")
    return url, ((local, None) if os.path.exists(local) else (None,))


intersphinx_mapping = {
    "python": _inventory("https://docs.python.org/3", "python3-doc"),
    "oslo.config": _inventory(
        "https://docs.openstack.org/oslo.config/latest", "python-oslo.config-doc"
    ),
    "oslo.log": _inventory("https://docs.openstack.org/oslo.log/latest", "python-oslo.log-doc"),
    "oslo.privsep": _inventory(
        "https://docs.openstack.org/oslo.privsep/latest", "python-oslo.privsep-doc"
    ),
    "oslo.concurrency": _inventory(
        "https://docs.openstack.org/oslo.concurrency/latest", "python-oslo.concurrency-doc"
    ),
    "cliff": _inventory("https://docs.openstack.org/cliff/latest", "python-cliff-doc"),
}
intersphinx_timeout = 10

# Names without any inventory to resolve them against, each with its reason.
nitpick_ignore = [
    # netaddr: no Debian documentation package carries its inventory, and its
    # documented name is netaddr.IPAddress, not the defining module's.
    ("py:class", "netaddr.ip.IPAddress"),
    ("py:class", "netaddr.ip.IPNetwork"),
    # The TypeVar of Command.from_fields (the class it is called on): private.
    ("py:class", "conntrack_lib.commands._C"),
    # fixtures publishes no Sphinx inventory.
    ("py:class", "fixtures.fixture.Fixture"),
    # cliff's inventory documents its commands and App, not cliff.columns or
    # cliff.formatters, whose classes the output columns derive from.
    ("py:class", "cliff.columns.FormattableColumn"),
    ("py:class", "cliff.columns._T"),
    ("py:class", "cliff.formatters.json_format.JSONFormatter"),
    ("py:class", "cliff.formatters.value.ValueFormatter"),
    ("py:class", "cliff.formatters.table.TableFormatter"),
    ("py:class", "cliff.formatters.shell.ShellFormatter"),
    # The type variable of a decorator's signature has no page of its own.
    ("py:class", "conntrack_lib.wire_errors._F"),
    # threading.Lock is a factory; Python's inventory has no entry for the
    # class of the objects it returns.
    ("py:class", "_thread.allocate_lock"),
]

# Type aliases, shown by name (each is documented in api.rst).
autodoc_type_aliases = {
    "AnyZoneStore": "conntrack_lib.zones.allocator.AnyZoneStore",
    "ErrorCallback": "conntrack_lib.worker.ErrorCallback",
    "Clock": "conntrack_lib.testing.fake.Clock",
}


def _public_bases(app, name, obj, options, bases):
    """Show only public base classes: private mixins have no page."""
    bases[:] = [b for b in bases if not getattr(b, "__name__", "").startswith("_")]


def _oslo_config_alias(app, env, node, contnode):
    """Resolve ``cfg.X`` through oslo.config's inventory as ``oslo_config.cfg.X``.

    The modules import ``from oslo_config import cfg``; annotations that
    autodoc cannot evaluate keep that spelling.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("cfg."):
        return None
    from sphinx.ext import intersphinx  # noqa: PLC0415

    node["reftarget"] = "oslo_config." + target
    return intersphinx.missing_reference(app, env, node, contnode)


def _release_notes_directive():
    """reno's ``release-notes`` directive, untagged history titled "Unreleased".

    With no tag in the history reno files every note under "0.0.0", a version
    the package never builds (pbr makes ``0.0.1.devN`` of it), and reno's
    ``unreleased-version-title`` applies only to versions after a tag.
    """
    from docutils import nodes  # noqa: PLC0415
    from reno.sphinxext import ReleaseNotesDirective  # noqa: PLC0415

    if _shallow_clone():
        return _notes_without_history()

    class ReleaseNotes(ReleaseNotesDirective):
        def run(self):
            result = super().run()
            untagged = self.options.get("unreleased-version-title", "Unreleased")
            for node in result:
                for title in node.findall(nodes.title):
                    if title.astext() == "0.0.0":
                        title[:] = [nodes.Text(untagged)]
            return result

    return ReleaseNotes


def _shallow_clone():
    """Tell whether the docs are built from a clone without its whole history."""
    import subprocess  # noqa: PLC0415

    done = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)),  # noqa: S607 - the docs build runs git from PATH
                           "rev-parse", "--is-shallow-repository"],
                          capture_output=True, text=True, check=False)
    return done.returncode != 0 or done.stdout.strip() != "false"


def _notes_without_history():
    """A ``release-notes`` directive that reads the note files themselves.

    reno needs the git history to date notes; a shallow clone (as some CI
    systems make) has none, so there every note is listed, grouped by
    section, under "Unreleased", which is what reno shows for this project
    as long as nothing is tagged.
    """
    import glob  # noqa: PLC0415

    import yaml  # noqa: PLC0415
    from docutils import nodes  # noqa: PLC0415
    from docutils.parsers.rst import Directive, directives  # noqa: PLC0415
    from docutils.statemachine import StringList  # noqa: PLC0415
    from sphinx.util.nodes import nested_parse_with_titles  # noqa: PLC0415

    sections = (("features", "New Features"), ("upgrade", "Upgrade Notes"),
                ("deprecations", "Deprecation Notes"), ("security", "Security Issues"),
                ("fixes", "Bug Fixes"), ("other", "Other Notes"))

    class NotesFromFiles(Directive):
        option_spec = {"unreleased-version-title": directives.unchanged}

        def run(self):
            root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
            notes = []
            for path in sorted(glob.glob(os.path.join(root, "releasenotes", "notes", "*.yaml"))):
                with open(path, encoding="utf-8") as handle:
                    notes.append(yaml.safe_load(handle))
            title = self.options.get("unreleased-version-title", "Unreleased")
            lines = [title, "-" * len(title), ""]
            for key, heading in sections:
                items = [item for note in notes for item in (note or {}).get(key, [])]
                if items:
                    lines += [heading, "~" * len(heading), ""]
                    for item in items:
                        body = item.strip().splitlines()
                        lines += ["* " + body[0], *("  " + line for line in body[1:]), ""]
            container = nodes.section()
            container.document = self.state.document
            nested_parse_with_titles(self.state, StringList(lines), container)
            return container.children

    return NotesFromFiles


def setup(app):
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("missing-reference", _oslo_config_alias)
    app.add_directive("release-notes", _release_notes_directive(), override=True)

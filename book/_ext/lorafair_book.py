"""The book's own Sphinx extension.

Each page's scripts are listed once: sphinx-thebe adds its inline configuration script each time
Sphinx reads the sources (twice in a Jupyter Book build with a bibliography), and a page that
declares the same ``const`` twice stops with a script error before its other scripts run."""


def _unique_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for js in context.get("script_files", []):
        filename = getattr(js, "filename", js)  # a sphinx _JavaScript, or a plain path
        key = (str(filename or ""), repr(sorted((getattr(js, "attributes", None) or {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

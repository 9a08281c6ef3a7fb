"""Rich results for the Python kernel: Jupyter-style MIME bundles, display(), and matplotlib figures.

Images (figures, objects with _repr_png_ / _repr_svg_ / _repr_jpeg_) are saved under /workspace/outputs so
that they come back as downloadable artifacts; their base64 goes into the bundle only when the caller asked
for inline images.
"""
import base64
import os
import sys

from ciw_common import WORKSPACE

OUTPUTS = os.path.join(WORKSPACE, "outputs")
MARKDOWN_MAX_ROWS = 50

_TEXT_REPRS = (
    ("_repr_html_", "text/html"),
    ("_repr_markdown_", "text/markdown"),
    ("_repr_latex_", "text/latex"),
    ("_repr_json_", "application/json"),
)
_IMAGE_REPRS = (
    ("_repr_png_", "image/png", "png"),
    ("_repr_jpeg_", "image/jpeg", "jpg"),
    ("_repr_svg_", "image/svg+xml", "svg"),
)


class Cell:
    """What one call produces besides its output: the results list and a counter for image names. The
    results are held to `cap` bytes (MAX_OUTPUT_BYTES, set by the kernel), as the text output is: display()
    in a loop must not send the service an answer of any size."""

    cap = 1 << 20

    def __init__(self, number, inline_images):
        self.number = number
        self.inline_images = inline_images
        self.results = []
        self.images = 0
        self.result_bytes = 0
        self.truncated = False

    def add(self, result, from_user=False):
        """Keeps a result if it fits in what is left of the cap. Past it the result is dropped, a note says so
        once, and a display() from user code raises OutputLimitExceeded, as a print past the cap does."""
        size = sum(len(v) for v in result["data"].values()) + len(result.get("path") or "")
        if self.result_bytes + size <= self.cap:
            self.result_bytes += size
            self.results.append(result)
            return
        if not self.truncated:
            self.truncated = True
            self.results.append({"type": "display_data", "data": {
                "text/plain": "<results past the %d-byte output limit were dropped>" % self.cap}})
        if from_user:
            from ciw_capture import OutputLimitExceeded
            raise OutputLimitExceeded("the results passed the %d-byte limit" % self.cap)

    def save_image(self, data, mime, ext):
        """Writes an image under outputs/ and returns the bundle fields that describe it."""
        self.images += 1
        os.makedirs(OUTPUTS, exist_ok=True)
        path = os.path.join(OUTPUTS, "cell%d-%d.%s" % (self.number, self.images, ext))
        raw = data.encode("utf-8") if isinstance(data, str) else data
        with open(path, "wb") as f:
            f.write(raw)
        fields = {}
        if self.inline_images:
            fields[mime] = raw.decode("utf-8") if mime == "image/svg+xml" else base64.b64encode(raw).decode("ascii")
        return fields, path


def _call_repr(value, method):
    fn = getattr(type(value), method, None)
    if fn is None:
        return None
    try:
        out = fn(value)
    except Exception:  # noqa: BLE001 - a broken _repr_ must not lose the others
        return None
    if isinstance(out, tuple):  # (data, metadata)
        out = out[0]
    return out


def _is_pandas(value, kind):
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, getattr(pd, kind))


def _markdown_table(df):
    """A GitHub-flavoured table of a DataFrame's first rows (pandas' to_markdown needs tabulate)."""
    shown = df.head(MARKDOWN_MAX_ROWS)
    try:
        text = shown.to_markdown()
    except Exception:  # noqa: BLE001 - tabulate missing or an odd frame
        esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        header = "| " + " | ".join([""] + [esc(c) for c in shown.columns]) + " |"
        rule = "|" + "---|" * (len(shown.columns) + 1)
        rows = ["| " + " | ".join([esc(i)] + [esc(v) for v in row]) + " |" for i, row in zip(shown.index, shown.values)]
        text = "\n".join([header, rule] + rows)
    if len(df) > MARKDOWN_MAX_ROWS:
        text += "\n\n(%d of %d rows)" % (MARKDOWN_MAX_ROWS, len(df))
    return text


def bundle(value, cell, safe_repr):
    """The MIME bundle of `value`, plus the path of its image when it rendered one."""
    data = {"text/plain": safe_repr(value)}
    for method, mime in _TEXT_REPRS:
        out = _call_repr(value, method)
        if isinstance(out, str):
            data[mime] = out
        elif out is not None and mime == "application/json":
            import json
            data[mime] = json.dumps(out, default=str)
    if "text/markdown" not in data and (_is_pandas(value, "DataFrame") or _is_pandas(value, "Series")):
        frame = value.to_frame() if _is_pandas(value, "Series") else value
        data["text/markdown"] = _markdown_table(frame)
    path = None
    for method, mime, ext in _IMAGE_REPRS:
        out = _call_repr(value, method)
        if out:
            fields, path = cell.save_image(out, mime, ext)
            data.update(fields)
            break
    return data, path


def add_result(kind, value, cell, safe_repr, from_user=False):
    data, path = bundle(value, cell, safe_repr)
    result = {"type": kind, "data": data}
    if path:
        result["path"] = path
    cell.add(result, from_user)


def capture_figures(cell):
    """Saves every open matplotlib figure as a PNG result and closes it (no plt.show() needed)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    for num in plt.get_fignums():
        fig = plt.figure(num)
        from io import BytesIO
        buf = BytesIO()
        try:
            fig.savefig(buf, format="png", bbox_inches="tight")
        except Exception as exc:  # noqa: BLE001 - a figure that cannot render is reported, not fatal
            cell.add({"type": "display_data", "data": {"text/plain": "<figure could not be rendered: %s>" % exc}})
            continue
        fields, path = cell.save_image(buf.getvalue(), "image/png", "png")
        data = {"text/plain": repr(fig)}
        data.update(fields)
        cell.add({"type": "display_data", "data": data, "path": path})
    plt.close("all")

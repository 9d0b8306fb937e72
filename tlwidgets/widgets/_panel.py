"""Base class of every panel: a VBox bound to a Session, with an error area."""

from __future__ import annotations

import copy
import functools
import html
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import ipywidgets as widgets

from ..core.errors import TLWidgetsError
from ..core.session import Session

F = TypeVar("F", bound=Callable[..., Any])


def guarded(method: F) -> F:
    """Decorate a panel handler: errors go to the panel's error area, never to a traceback.

    A :class:`TLWidgetsError` is the user's to fix and shows as a plain message; any other
    exception is a bug, shown with its type so it can be reported.
    """

    @functools.wraps(method)
    def wrapper(self: Panel, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a handler must never raise into the front end
            self.show_error(exc)
            return None
        return result

    return wrapper  # type: ignore[return-value]


class Panel(widgets.VBox):
    """A view over a :class:`Session`.

    Subclasses build their children in ``__init__``, call :meth:`observe_session`
    for the traits they draw, and change things only through session methods.

    Args:
        session: the shared session; a new one is made when omitted.
        title: heading shown above the panel (``None`` for none).
    """

    css_class = "tlw-panel"

    def __init__(self, session: Session | None = None, title: str | None = None, **kwargs: Any) -> None:
        self.session = session if session is not None else Session()
        self.error_area = widgets.HTML(value="", layout=widgets.Layout(display="none"))
        self.error_area.add_class("tlw-error")
        self._title = widgets.HTML(f"<h3 style='margin:4px 0'>{html.escape(title)}</h3>" if title else "")
        self._observers: list[tuple[Callable[..., Any], list[str]]] = []
        super().__init__(**kwargs)
        self.add_class("tlw-panel")
        if self.css_class != "tlw-panel":
            self.add_class(self.css_class)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        sync_figures(self)
        return super()._repr_mimebundle_(**kwargs)

    def set_body(self, *children: widgets.Widget) -> None:
        """Lay out title, body widgets, then the error area."""
        self.children = (self._title, *children, self.error_area)
        guard_figures(self)

    # ------------------------------------------------------------- errors
    def show_error(self, exc: BaseException | str) -> None:
        """Show an error in plain words in this panel's error area."""
        if isinstance(exc, str):
            text = exc
        elif isinstance(exc, TLWidgetsError):
            text = str(exc)
        else:
            last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
            where = f" (in {last[0].name})" if last else ""
            text = f"{type(exc).__name__}: {exc}{where}"
        self.error_area.value = (
            "<div style='color:#a00;background:#fff0f0;border:1px solid #e0b0b0;padding:4px 8px;border-radius:4px'>"
            f"{html.escape(text)}</div>"
        )
        self.error_area.layout.display = None
        self.last_error = text

    def clear_error(self) -> None:
        """Hide the error area."""
        self.error_area.value = ""
        self.error_area.layout.display = "none"
        self.last_error = ""

    last_error: str = ""

    # ------------------------------------------------------------- session
    def observe_session(self, handler: Callable[[dict], Any], names: str | Iterable[str]) -> None:
        """Observe session traits; observers are removed again by :meth:`close`."""
        names = [names] if isinstance(names, str) else list(names)

        def safe(change: dict) -> None:
            try:
                handler(change)
            except Exception as exc:  # noqa: BLE001 - a redraw error must not break the session
                self.show_error(exc)

        self.session.observe(safe, names=names)
        self._observers.append((safe, names))

    def close(self) -> None:
        """Detach from the session and close every widget below this panel.

        ipywidgets keeps each widget (and its Layout and style) alive until it is
        closed, so closing only the direct children would leak the rest.
        """
        if self.comm is None:  # already closed; ipywidgets calls close() again from __del__
            return
        for handler, names in self._observers:
            self.session.unobserve(handler, names=names)
        self._observers.clear()
        owned = reachable_widgets(self)
        super().close()
        for w in owned:
            w.close()


def reachable_widgets(root: widgets.Widget) -> list[widgets.Widget]:
    """Widgets below ``root`` (not ``root`` itself): children, and their Layout and style models."""
    seen: dict[int, widgets.Widget] = {}
    stack = [root]
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen[id(w)] = w
        for attr in ("children", "layout", "style"):
            value = getattr(w, attr, None) if w.has_trait(attr) else None
            items = value if isinstance(value, (tuple, list)) else (value,)
            stack.extend(v for v in items if isinstance(v, widgets.Widget))
    seen.pop(id(root))
    return list(seen.values())


def sync_figures(root: widgets.Widget) -> None:
    """Store the current data of every Plotly FigureWidget below ``root`` in its widget state.

    A FigureWidget sends later changes only as messages to the views that exist then,
    and refreshes its state only when it is displayed itself, which never happens inside
    a panel. A view made afterwards would draw the figure as it was built, empty: Voila
    draws the page only after the notebook has run. Called when a panel is displayed.
    """
    for w in reachable_widgets(root):
        if w.has_trait("_widget_data") and hasattr(w, "_data") and hasattr(w, "_layout_obj"):
            w._widget_layout = copy.deepcopy(w._layout_obj._props)
            w._widget_data = copy.deepcopy(w._data)


# FigureWidget methods that send a message as "set a trait, then reset it to None", and the
# handler of messages from the browser.
_FIGURE_SENDS = (
    "_send_update_msg", "_send_restyle_msg", "_send_relayout_msg", "_send_addTraces_msg",
    "_send_deleteTraces_msg", "_send_moveTraces_msg", "_send_animate_msg",
)


def guard_figures(root: widgets.Widget) -> None:
    """Let threads update the Plotly figures below ``root`` without losing updates.

    While the kernel handles a message from the browser for a widget (a FigureWidget
    gets one after every redraw), ipywidgets holds that widget's outgoing state and
    sends only the last value of each trait when done. A FigureWidget sends each change
    by setting a message trait and resetting it to ``None``; from the training thread,
    both can land inside that window, and the browser then receives only ``None``: the
    curves or the confusion matrix silently miss that update. A per-figure lock makes
    "set, reset" and the handling of a browser message exclude each other.
    """
    for w in (root, *reachable_widgets(root)):
        if not w.has_trait("_py2js_update") or getattr(w, "_tlw_lock", None) is not None:
            continue
        lock = threading.RLock()
        w._tlw_lock = lock
        for name in _FIGURE_SENDS:
            method = getattr(w, name, None)
            if method is not None:
                setattr(w, name, _locked(method, lock))
        if w.comm is not None:
            w.comm.on_msg(_locked(w._handle_msg, lock))  # replaces the handler registered at open


def _locked(method: Callable[..., Any], lock: threading.RLock) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    return wrapper

"""An accessibility check of the page open in the browser: labels, contrast, landmarks and headings, keyboard.

Run in the page itself (computed styles), so it judges what the browser renders, not the HTML source.
"""

from __future__ import annotations

from typing import Any

from webdriver import TAB, Browser

# Every problem as a sentence; an empty list means the page passes.
STATIC_CHECKS = r"""
var problems = [];
function lum(c) {
  var m = c.match(/rgba?\(([^)]+)\)/); if (!m) return null;
  var p = m[1].split(',').map(function (x) { return parseFloat(x); });
  if (p.length > 3 && p[3] === 0) return null;
  var ch = p.slice(0, 3).map(function (v) {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
}
function background(el) {
  for (var e = el; e; e = e.parentElement) {
    var l = lum(getComputedStyle(e).backgroundColor);
    if (l !== null) return l;
  }
  return 1;
}
function visible(el) {
  var r = el.getBoundingClientRect(); var s = getComputedStyle(el);
  return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none';
}
// Form controls: a <label for>, an enclosing label, or an aria-label.
document.querySelectorAll('input:not([type=hidden]), select, textarea').forEach(function (el) {
  var labelled = (el.id && document.querySelector('label[for="' + el.id + '"]')) || el.closest('label') ||
    el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
  if (!labelled) problems.push('form control without a label: ' + (el.name || el.outerHTML.slice(0, 80)));
});
// Text contrast: every visible element with its own text, against the first opaque background behind it.
document.querySelectorAll('body *').forEach(function (el) {
  var own = Array.prototype.some.call(el.childNodes, function (n) { return n.nodeType === 3 && n.textContent.trim(); });
  if (!own || !visible(el)) return;
  var fg = lum(getComputedStyle(el).color); if (fg === null) return;
  var bg = background(el);
  var ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
  if (ratio < 4.5) {
    problems.push('contrast ' + ratio.toFixed(2) + ':1 < 4.5:1 for "' + el.textContent.trim().slice(0, 40) + '"');
  }
});
// Landmarks and headings.
['header', 'nav', 'main'].forEach(function (tag) {
  if (!document.querySelector(tag)) problems.push('no <' + tag + '> landmark');
});
if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
if (!document.documentElement.lang) problems.push('no lang on <html>');
// Number every action, for the keyboard walk.
var actions = Array.prototype.filter.call(
  document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea'), visible);
actions.forEach(function (el, i) { el.setAttribute('data-a11y', String(i)); });
return {problems: problems, actions: actions.length};
"""

FOCUSED = r"""
var el = document.activeElement;
if (!el || el === document.body) return null;
var s = getComputedStyle(el);
return {index: el.getAttribute('data-a11y'), outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0,
        what: el.outerHTML.slice(0, 80)};
"""


def check(browser: Browser) -> list[str]:
    """The page's accessibility problems; the keyboard walk presses Tab until every action had the focus."""
    found: dict[str, Any] = browser.run(STATIC_CHECKS)
    problems: list[str] = list(found["problems"])
    total = int(found["actions"])
    browser.run("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);")
    reached: set[str] = set()
    for _ in range(total + 5):
        browser.press(TAB)
        focused = browser.run(FOCUSED)
        if not focused or focused["index"] is None:
            continue
        reached.add(focused["index"])
        if not focused["outline"]:
            problems.append(f"no visible focus on {focused['what']}")
        if len(reached) == total:
            break
    missing = total - len(reached)
    if missing:
        problems.append(f"{missing} of {total} actions not reachable with Tab")
    return sorted(set(problems))

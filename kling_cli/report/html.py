"""One self-contained HTML page: a card per task, with the video itself.

Everything is inline (style, script, no fonts or CDN), so the page opens anywhere with no network: a
downloaded video is linked by its path relative to the page, any other by the provider's URL. Large
batches stay usable: no video is fetched when the page opens (`preload="none"`), and cards out of view are
not laid out (`content-visibility`); as a card comes near the view its video gets its player controls and, when
downloaded, shows its poster (an image of the same name beside it) or loads its first frame. The status filter
is plain JavaScript.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from pathlib import Path

from kling_cli.report import Record, cost_line, counts, local_video
from kling_cli.waiting import format_duration

_STYLE = """
:root { color-scheme: light dark; --bg: #f6f7f9; --card: #fff; --text: #1d2330; --muted: #5d6577; --line: #dde1e8;
  --ok: #1a7f37; --bad: #c62828; --warn: #b26a00; --info: #0b62c4; }
@media (prefers-color-scheme: dark) { :root { --bg: #14171c; --card: #1d2128; --text: #e6e8ec; --muted: #9aa3b2;
  --line: #2e343e; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg);
  color: var(--text); }
header { position: sticky; top: 0; z-index: 1; background: var(--bg); border-bottom: 1px solid var(--line);
  padding: 14px 20px; }
h1 { font-size: 18px; margin: 0 0 4px; }
.sub { color: var(--muted); margin: 0 0 10px; }
.filters { display: flex; flex-wrap: wrap; gap: 6px; }
.filters button { font: inherit; border: 1px solid var(--line); background: var(--card); color: var(--text);
  border-radius: 999px; padding: 3px 12px; cursor: pointer; }
.filters button[aria-pressed="true"] { background: var(--text); color: var(--bg); }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 14px; padding: 16px 20px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; overflow: hidden;
  content-visibility: auto; contain-intrinsic-size: auto 520px;
  display: flex; flex-direction: column; }
.card[hidden] { display: none; }
video, .novideo { width: 100%; aspect-ratio: 16 / 9; background: #000; display: block; }
.novideo { display: flex; align-items: center; justify-content: center; color: #aaa; font-size: 13px; }
.body { padding: 10px 12px 12px; }
.top { display: flex; justify-content: space-between; gap: 8px; align-items: baseline; }
.name { font-weight: 600; }
.badge { font-size: 12px; font-weight: 600; border-radius: 999px; padding: 1px 9px; color: #fff;
  background: var(--muted); white-space: nowrap; }
.s-succeeded .badge { background: var(--ok); }
.s-failed .badge, .s-refused .badge, .s-invalid .badge { background: var(--bad); }
.s-uncertain .badge, .s-error .badge { background: var(--warn); }
.s-running .badge, .s-queued .badge, .s-submitted .badge { background: var(--info); }
.prompt { margin: 6px 0 8px; white-space: pre-wrap; overflow-wrap: anywhere; }
.reason { color: var(--bad); margin: 0 0 8px; overflow-wrap: anywhere; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 1px 10px; margin: 0; font-size: 12.5px; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
"""

_SCRIPT = """
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var buttons = Array.prototype.slice.call(document.querySelectorAll('.filters button'));
  function show(status) {
    cards.forEach(function (card) { card.hidden = status !== 'all' && card.dataset.status !== status; });
    buttons.forEach(function (b) { b.setAttribute('aria-pressed', String(b.dataset.filter === status)); });
    document.getElementById('shown').textContent = String(cards.filter(function (c) { return !c.hidden; }).length);
  }
  buttons.forEach(function (b) { b.addEventListener('click', function () { show(b.dataset.filter); }); });
  // Player controls cost the browser ~1 ms per video: each gets them as its card comes near the view, and a
  // downloaded one then loads its first frame; a remote one loads only when played.
  var videos = Array.prototype.slice.call(document.querySelectorAll('video'));
  function ready(video) {
    video.controls = true;
    if (video.hasAttribute('data-local')) { video.preload = 'metadata'; video.load(); }
  }
  if ('IntersectionObserver' in window) {
    var seen = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) { ready(entry.target); seen.unobserve(entry.target); }
      });
    }, { rootMargin: '400px' });
    videos.forEach(function (v) { seen.observe(v); });
  } else {
    videos.forEach(function (v) { v.controls = true; });
  }
})();
"""


def _cost(record: Record) -> str:
    reported = f"{record.cost.amount:g} {record.cost.unit}" if record.cost else "not reported"
    guess = f"{record.estimate.amount:g} {record.estimate.unit}" if record.estimate else "unknown"
    return f"{reported} · estimate {guess}"


def _card(record: Record, page_dir: Path) -> str:
    status = escape(record.status)
    local = local_video(record, page_dir)
    if local is not None:
        src, poster = local
        frame = f' poster="{escape(poster)}"' if poster else ""
        video = f'<video preload="none" data-local{frame} src="{escape(src)}"></video>'
    elif record.video_url:
        video = f'<video preload="none" src="{escape(record.video_url)}"></video>'
    else:
        video = '<div class="novideo">no video</div>'
    meta = [("kind", record.kind), ("model", record.model), ("mode", record.mode),
            ("duration", f"{record.duration} s" if record.duration else None),
            ("provider", record.provider), ("profile", record.profile),
            ("cost", _cost(record) if record.task_id else None),
            ("time", format_duration(record.seconds) if record.seconds is not None else None),
            ("task id", record.task_id), ("external id", record.external_id)]
    rows = "".join(f"<dt>{name}</dt><dd>{'<code>' if name.endswith('id') else ''}{escape(str(value))}"
                   f"{'</code>' if name.endswith('id') else ''}</dd>" for name, value in meta if value)
    reason = f'<p class="reason">{escape(record.error)}</p>' if record.error and record.status != "succeeded" else ""
    prompt = f'<p class="prompt">{escape(record.prompt)}</p>' if record.prompt else ""
    return (f'<article class="card s-{status}" data-status="{status}">{video}<div class="body">'
            f'<div class="top"><span class="name">{escape(record.name)}</span><span class="badge">{status}</span>'
            f"</div>{prompt}{reason}<dl>{rows}</dl></div></article>")


def render(records: list[Record], page: Path, *, title: str = "kling report") -> str:
    page_dir = page.parent
    found = counts(records)
    buttons = [f'<button type="button" data-filter="all" aria-pressed="true">all {len(records)}</button>']
    buttons += [f'<button type="button" data-filter="{escape(s)}" aria-pressed="false">{escape(s)} {n}</button>'
                for s, n in found.items()]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cards = "\n".join(_card(record, page_dir) for record in records)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>{escape(title)}</h1>
<p class="sub"><span id="shown">{len(records)}</span> of {len(records)} tasks shown · {escape(cost_line(records))}
· {stamp}</p>
<nav class="filters" aria-label="filter by status">{"".join(buttons)}</nav>
</header>
<main>
{cards}
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""

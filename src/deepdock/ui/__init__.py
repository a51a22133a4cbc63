"""The web dashboard: static assets the server serves at /ui (no build step, nothing from elsewhere).

Plain ES modules and one stylesheet: the pages are tables, bars, a GPU map and line charts over data the
REST API already returns, which needs no framework, and without a build step the repository holds
exactly what the browser runs (air-gapped installs need no CDN and no npm). ``static/chart.js`` draws
the metric charts on a canvas (a few hundred points after the server's LTTB downsampling, so a
100,000-point series draws in milliseconds). docs/ui.md shows every page.
"""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"

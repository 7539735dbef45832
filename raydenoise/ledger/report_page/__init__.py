"""The report page (``report.html``) of a denoise or evaluate run: one self-contained HTML file
a person looks at. No Ray.

What it holds, all inline (no network, no CDN; it works as a downloaded file):
- the summary in words and the run's model, engine and options;
- plots as inline SVG: the distribution of the PSNR gain (with a reference) or of the input and
  output noise levels (without), time per image (histogram, and against image size), images
  per node — computed in streaming passes over the report, whatever its size;
- every row in a sortable, filterable, paged table (up to ``TABLE_ROWS``: beyond that the rows
  that matter most — failures, the best and worst — and ``report.csv``/``report.parquet`` for
  the rest), each row opening its comparison;
- for a few images (``Comparison``): a before/after slider over the whole image at screen size
  and 1:1 crops of input, output (and reference) of the same regions: where the output differs
  most from the input, and the finest texture. Other rows open the files themselves in the
  same slider when they are reachable by a relative path (a local run).

Every name is HTML-escaped; the table's data is JSON inside a ``<script type=application/json>``
with ``<`` escaped, so no file name can end the script.
"""

from .crops import CROP, SCREEN, Comparison, compare, data_uri, regions, screen_size
from .denoise import TABLE_COLUMNS, denoise_page, denoise_words
from .evaluate import evaluate_page, extremes
from .html import TABLE_ROWS, relative_link, render_page, select_rows
from .plots import BINS, histogram, svg_bars, svg_histogram, svg_scatter

__all__ = [
    "BINS",
    "CROP",
    "SCREEN",
    "TABLE_COLUMNS",
    "TABLE_ROWS",
    "Comparison",
    "compare",
    "data_uri",
    "denoise_page",
    "denoise_words",
    "evaluate_page",
    "extremes",
    "histogram",
    "regions",
    "relative_link",
    "render_page",
    "screen_size",
    "select_rows",
    "svg_bars",
    "svg_histogram",
    "svg_scatter",
]

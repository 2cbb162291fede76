"""The checkout application: a model's outputs read as receipts over a folder of images, and the
static report page of a run (used by ``demo/demo.py``)."""

from dpsnet.checkout.catalog import ProductCatalog
from dpsnet.checkout.drawing import density_panel, draw_receipt
from dpsnet.checkout.inputs import InputFile, find_inputs
from dpsnet.checkout.receipt import lower_score_thresholds, make_receipt, receipts_csv
from dpsnet.checkout.report import metrics_html, render_report, write_report
from dpsnet.checkout.run import CheckoutRun, run_checkout

__all__ = [
    "CheckoutRun",
    "InputFile",
    "ProductCatalog",
    "density_panel",
    "draw_receipt",
    "find_inputs",
    "lower_score_thresholds",
    "make_receipt",
    "metrics_html",
    "receipts_csv",
    "render_report",
    "run_checkout",
    "write_report",
]

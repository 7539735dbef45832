"""The CLI's description and each command's examples (shown by --help)."""

from __future__ import annotations

DESCRIPTION = """Denoise and enhance folders and buckets of noisy or low-light photos with Ray.

Clean a folder or an s3:// prefix with a built-in model, no training needed:
  raydenoise denoise --input photos/ --output clean/
Or train your own: synth (or your own pairs) -> ingest -> train -> denoise / evaluate.
`raydenoise COMMAND --help` shows each command's options and an example."""


EXAMPLES = {
    "synth": """example:
  raydenoise synth --out pairs --noise gaussian:25            # scikit-image's sample photos
  raydenoise synth --clean photos/ --out pairs --noise low-light --max-side 600""",
    "ingest": """examples:
  raydenoise ingest --low pairs/low --high pairs/high --out dataset
  raydenoise ingest --high s3://bucket/clean/ --out s3://bucket/dataset/ --split 0.9,0.1,0   # clean-only""",
    "train": """examples:
  raydenoise train --data dataset --model swift --storage-path runs --name first --time-limit 900
  raydenoise train --data clean-dataset --init builtin:denoise --degrade gaussian:0-50 \\
      --storage-path s3://bucket/runs --name finetune --epochs 20    # re-run the same name to resume""",
    "denoise": """examples:
  raydenoise denoise --input photos/ --output clean/                       # builtin:denoise
  raydenoise denoise --input s3://bucket/dark/ --output s3://bucket/bright/ --model builtin:low-light
  raydenoise denoise --input noisy/ --output out/ --reference clean/ --model runs/first/model""",
    "evaluate": """example:
  raydenoise evaluate --data dataset --model runs/first/model --baselines identity,nlm,bm3d""",
    "models": """example:
  raydenoise models
  raydenoise denoise --input photos/ --output clean/ --model builtin:low-light""",
    "export": """example:
  raydenoise export --model builtin:denoise --out denoise.onnx
  raydenoise denoise --input photos/ --output clean/ --model denoise.onnx     # or any image-to-image ONNX graph""",
    "demo": """example:
  raydenoise demo --out demo-out        # then open demo-out/denoised/_report/report.html""",
}

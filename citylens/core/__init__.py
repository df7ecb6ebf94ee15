"""The core layer: shared vocabulary and I/O that every other layer may import and that imports none of them.

ADE20K classes (`ade20k`), image records (`records`), the analysis view and network input (`view`), the
explainer layer presets (`layers`) and atomic writes, locks and resumable arrays (`io`). The layers above,
ground up: data, models, explain and segment (each importing the core only, never each other); analysis
and figures; the pipeline; report; the adapters (callbacks, config, train, analyze, the report CLI).
"""

"""Generation of blurry data with known motion, apart from its loading (:mod:`neurmap.data`): procedural
scenes, motion flows (uniform linear, Gong et al.'s camera motion, smooth random fields), the line-kernel blur
that applies a flow, the built-in datasets made from them, on-the-fly random blur of any photo folder (M's
pretraining), and the back end of ``python -m neurmap.synthesize``."""

"""Contact networks (MFFnet, ResNet and MobileNetV2 trunks), their blocks, transfer
learning between input feature sets, and the complexity count against the paper."""
from .blocks import (BasicBlock, ContactHead, ConvBNAct, InvertedResidual, MaskedBatchNorm2d,
                     MFFBlock, SqueezeExcitation, outer_mask)
from .complexity import PAPER_TABLE, complexity_table, count_macs, count_parameters
from .contactnet import (MODELS, ContactEnsemble, ContactNet, ContactProbability, ModelConfig, build_model,
                         load_trunk, mffnet30, mffnet36, mffnet42, mobilenet33, mobilenet33_96,
                         model_config, resnet34, resnet36, resnet38, resnet40, resnet42,
                         symmetric_probability, transfer_state)

__all__ = [
    "ContactNet", "ContactProbability", "ContactEnsemble", "ModelConfig", "MODELS", "build_model", "model_config",
    "load_trunk", "transfer_state", "symmetric_probability",
    "mffnet30", "mffnet36", "mffnet42",
    "resnet34", "resnet36", "resnet38", "resnet40", "resnet42",
    "mobilenet33", "mobilenet33_96",
    "MFFBlock", "BasicBlock", "InvertedResidual", "SqueezeExcitation", "MaskedBatchNorm2d",
    "ConvBNAct", "ContactHead", "outer_mask",
    "PAPER_TABLE", "complexity_table", "count_macs", "count_parameters",
]

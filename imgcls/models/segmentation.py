"""Segmentation models (the segment task, imgcls.tasks.segment) on segmentation_models_pytorch encoders
(any of its encoders; timm models as "tu-NAME"):
U-Net, DeepLabV3+ (atrous spatial pyramid pooling, Chen et al. 2018) and LR-ASPP (the light head of
MobileNetV3, Howard et al. 2019, torchvision's implementation). Registered in the model registry for the
segment task; `model.pretrained=FILE` loads an ImageNet classifier's weights into the encoder (a
torchvision MobileNetV2 file fits `encoder=mobilenet_v2` key for key).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.registry import register_model


def _encoder(name: str, in_chans: int, depth: int = 5):
    import segmentation_models_pytorch as smp

    try:
        return smp.encoders.get_encoder(name, in_channels=in_chans, depth=depth, weights=None)
    except KeyError:
        raise ImgclsError(f"unknown encoder {name!r}; e.g. mobilenet_v2, resnet18, resnet34, efficientnet-b0, "
                          f"or tu-<any timm model>") from None


def segmenter(fn):
    fn.task = "segment"
    return register_model(fn)


class _Segmenter(nn.Module):
    """Output (B, num_classes, H, W) at the input's size; inputs whose sides are not multiples of the
    encoder's stride (32) are padded and the logits cropped back."""

    stride = 32
    head_name = "segmentation_head"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.stride, -w % self.stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        return self.net(x)[..., :h, :w]


class SmpSegmenter(_Segmenter):
    """An smp model's encoder, decoder and head as this module's own children (keys `encoder.*`, so that a
    classifier's weights file aligns with the encoder), run as smp runs them."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.encoder, self.decoder, self.segmentation_head = net.encoder, net.decoder, net.segmentation_head

    def net(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder(self.encoder(x)))


@segmenter
def deeplabv3plus(*, num_classes: int, in_chans: int = 3, encoder: str = "mobilenet_v2", output_stride: int = 16,
                  decoder_channels: int = 128) -> nn.Module:
    """DeepLabV3+: ASPP over the encoder's last features (atrous rates 12/24/36), a decoder joining stride-4 features."""
    import segmentation_models_pytorch as smp

    _encoder(encoder, in_chans)  # a clear error for an unknown name
    return SmpSegmenter(smp.DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, encoder_output_stride=output_stride,
                                          decoder_channels=decoder_channels, in_channels=in_chans, classes=num_classes))


@segmenter
def unet(*, num_classes: int, in_chans: int = 3, encoder: str = "mobilenet_v2",
         decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)) -> nn.Module:
    """U-Net (Ronneberger et al. 2015): the encoder's features at every stride joined back up by skip connections."""
    import segmentation_models_pytorch as smp

    _encoder(encoder, in_chans)
    return SmpSegmenter(smp.Unet(encoder_name=encoder, encoder_weights=None, decoder_channels=tuple(decoder_channels),
                                 in_channels=in_chans, classes=num_classes))


class LRASPP(_Segmenter):
    def __init__(self, encoder: nn.Module, num_classes: int, inter_channels: int):
        from torchvision.models.segmentation.lraspp import LRASPPHead

        super().__init__()
        self.encoder = encoder
        chans = encoder.out_channels  # per stride 1, 2, 4, 8, 16, 32
        self.segmentation_head = LRASPPHead(chans[3], chans[-1], num_classes, inter_channels)

    def net(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)
        out = self.segmentation_head({"low": f[3], "high": f[-1]})
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


@segmenter
def lraspp(*, num_classes: int, in_chans: int = 3, encoder: str = "mobilenet_v2", inter_channels: int = 128) -> nn.Module:
    """LR-ASPP: a squeeze-and-excitation-gated stride-32 branch plus a stride-8 branch; the lightest head."""
    return LRASPP(_encoder(encoder, in_chans), num_classes, inter_channels)

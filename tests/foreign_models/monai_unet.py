"""MONAI's UNet (a class FrozenFlow did not write) built from a flat dict (tests only).

Five stride-2 levels, so S → S/32 as the tap names expect (288 → 144 … 9).
"""
from monai.networks.nets import UNet


def make(config, direction):
    p = f"{direction}_"
    c_in = config["gen_sino_channels_SI"] if direction == "SI" else config["gen_image_channels"]
    c_out = config["gen_image_channels"] if direction == "SI" else config["gen_sino_channels_IS"]
    return UNet(spatial_dims=2, in_channels=c_in, out_channels=c_out, channels=tuple(config[p + "unet_channels"]),
                strides=(2, 2, 2, 2, 2), num_res_units=0, dropout=config[p + "unet_dropout"])

"""A researcher's own config-driven U-Net, written as such classes are; FrozenFlow never edits it.

``Generator(config, gen_SI=True)``: sinogram → image (cropped to ``gen_image_size`` inside the class),
``gen_SI=False``: image → sinogram, which demands exactly an S×S input. Module names differ from
FrozenFlow's (``contract_blocks``, ``neck``, ``expand_blocks``) and the skips are classic concatenations.
Used by ``scripts/demo.sh`` (stage "your own Generator") and the tests (tests/test_model_contract.py).
"""
import torch
import torch.nn as nn


class Generator(nn.Module):
    def __init__(self, config, gen_SI=True):
        super().__init__()
        p = "SI_" if gen_SI else "IS_"
        self.gen_SI, self.S = gen_SI, config["gen_sino_size"]
        self.image_size = config["gen_image_size"]
        c_in = config["gen_sino_channels_SI"] if gen_SI else config["gen_image_channels"]
        c_out = config["gen_image_channels"] if gen_SI else config["gen_sino_channels_IS"]
        h, mult = config[p + "gen_hidden_dim"], config[p + "gen_mult"]
        if h < 1:
            raise ValueError(f"{p}gen_hidden_dim must be positive, got {h}")
        dims = [int(h * mult ** k) for k in range(5)]
        self.contract_blocks = nn.ModuleList()
        prev = c_in
        for d in dims:
            self.contract_blocks.append(nn.Sequential(
                nn.Sequential(nn.Conv2d(prev, d, 4, 2, 1), nn.LeakyReLU(0.01)),
                nn.Sequential(nn.Conv2d(d, d, 3, 1, 1), nn.ReLU())))
            prev = d
        self.neck = nn.Sequential(nn.Conv2d(dims[-1], dims[-1], 3, 1, 1), nn.ReLU())
        self.expand_blocks = nn.ModuleList()
        for j in range(5):
            skip = dims[4 - j]
            nxt = dims[3 - j] if j < 4 else c_out
            layers = [nn.ConvTranspose2d(prev + skip, nxt, 4, 2, 1)]
            if j < 4:
                layers.append(nn.ReLU())
            self.expand_blocks.append(nn.Sequential(*layers))
            prev = nxt
        self.final = nn.Sigmoid() if config.get(p + "gen_final_activ") == "Sigmoid" else nn.Identity()

    def forward(self, x):
        if not self.gen_SI and tuple(x.shape[-2:]) != (self.S, self.S):
            raise ValueError(f"image→sinogram Generator needs a {self.S}x{self.S} input, got {tuple(x.shape[-2:])}")
        skips = []
        for block in self.contract_blocks:
            x = block(x)
            skips.append(x)
        x = self.neck(x)
        for j, block in enumerate(self.expand_blocks):
            x = block(torch.cat([x, skips[4 - j]], dim=1))
        x = self.final(x)
        if self.gen_SI:  # this class crops its own image
            o = (self.S - self.image_size) // 2
            x = x[..., o:o + self.image_size, o:o + self.image_size]
        return x

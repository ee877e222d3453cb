"""Ray Tune search spaces, one dictionary per concern, in the researcher's naming convention.

Direction prefixes: ``SI_`` (sinogram → image, the student) and ``IS_`` (image → sinogram, the
teacher).  ``construct_dictionaries`` merges them per task; nothing here is task-specific.

Two sizes: the researcher's ranges (``_architecture``: hidden_dim 10–35, mult 1.1–3.5, z_dim 512–2000,
batch 2^5–2^8 — networks for a GPU at 288×288), and a CPU-sized space (``_cpu``) for the demo and the
tests (``tune-* --space cpu``).
"""
from ray import tune

# Sizes shared by both directions (not tuned: they follow the data).
config_SHARED = {
    "gen_sino_size": 288,
    "gen_image_size": 180,
    "gen_image_channels": 1,
}
ACTIVATIONS = [None, "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Softplus"]  # their final activations


def _architecture(prefix: str, neck: list[str]) -> dict:
    return {
        f"gen_sino_channels_{prefix}": 1,
        f"{prefix}_gen_neck": tune.choice(neck),
        f"{prefix}_gen_hidden_dim": tune.lograndint(10, 36),
        f"{prefix}_gen_mult": tune.uniform(1.1, 3.5),
        f"{prefix}_gen_z_dim": tune.lograndint(512, 2001),  # the bottleneck width of a narrow neck
        f"{prefix}_gen_fill": tune.choice([0, 1, 2]),
        f"{prefix}_layer_norm": tune.choice(["batch", "instance", "group", "none"]),
        f"{prefix}_pad_mode": tune.choice(["zeros", "replicate"]),
        f"{prefix}_dropout": tune.choice([False, True]),
        f"{prefix}_skip_mode": tune.choice(["none", "add", "concat", "conv"]),
        f"{prefix}_exp_kernel": tune.choice([3, 4]),
        f"{prefix}_gen_final_activ": tune.choice(ACTIVATIONS),
    }


def _cpu(prefix: str, neck: list[str]) -> dict:
    """Networks a 2-core CPU trains in minutes (the demo's and the tests' space)."""
    return {**_architecture(prefix, neck),
            f"{prefix}_gen_hidden_dim": tune.choice([8, 12, 16, 24, 32]),
            f"{prefix}_gen_mult": tune.choice([1.5, 2.0, 2.5]),
            f"{prefix}_gen_z_dim": tune.choice([32, 64, 128]),
            f"{prefix}_dropout": False,
            f"{prefix}_gen_final_activ": tune.choice([None, "ReLU", "Softplus"])}


config_RAY_SI = {**config_SHARED, **_architecture("SI", ["narrow", "medium", "wide"])}
config_RAY_SI_cpu = {**config_SHARED, **_cpu("SI", ["narrow", "medium", "wide"])}
# The teacher's neck stays medium (5×5) unless the user overrides it (docs/DESIGN.md §3).
config_RAY_IS = {**config_SHARED, **_architecture("IS", ["medium"])}
config_RAY_IS_cpu = {**config_SHARED, **_cpu("IS", ["medium"])}


def _scale(prefix: str, learned: bool) -> dict:
    """Their two scale dicts: a learned scale (normalize false; fixedScale present and unused, as in their
    records), or normalised output and target at a fixed scale."""
    if learned:
        return {f"{prefix}_normalize": False,
                f"{prefix}_fixedScale": 1,
                f"{prefix}_learnedScale_init": tune.loguniform(0.1, 30.0),
                f"{prefix}_output_scale_lr_mult": tune.loguniform(1.0, 10.0)}
    return {f"{prefix}_normalize": True,
            f"{prefix}_fixedScale": tune.choice([0.5, 1.0, 2.0]),
            f"{prefix}_learnedScale_init": 1,
            f"{prefix}_output_scale_lr_mult": 1.0}


config_RAY_SI_learnScale = _scale("SI", learned=True)
config_RAY_SI_fixedScale = _scale("SI", learned=False)
config_RAY_IS_learnScale = _scale("IS", learned=True)
config_RAY_IS_fixedScale = _scale("IS", learned=False)

# Supervised training.
config_RAY_SUP = {
    "batch_base2_exponent": tune.randint(5, 9),  # batch 2^5 … 2^8
    "gen_lr": tune.loguniform(1e-4, 1e-2),
    "gen_b1": tune.uniform(0.1, 0.9),
    "gen_b2": tune.uniform(0.1, 0.999),
    "sup_base_criterion": tune.choice(["MSELoss", "L1Loss"]),
    "lr_schedule": tune.choice(["none", "cosine"]),
}
config_RAY_SUP_cpu = {**config_RAY_SUP, "batch_base2_exponent": tune.choice([2, 3, 4]),
                      "gen_lr": tune.loguniform(1e-4, 3e-3), "gen_b1": tune.choice([0.5, 0.9]),
                      "gen_b2": tune.choice([0.99, 0.999])}

# Feature injection (student only).
config_RAY_DUAL = {
    "inject_levels": [144, 36, 9],
    "inject_enc_to_dec": tune.choice([True, False]),
    "inject_dec_to_enc": tune.choice([True, False]),
    "feature_scale_init": 0.1,
    "feature_scale_lr_mult": tune.loguniform(0.1, 10.0),
    "inject_routing": "auto",  # crosswise for an IS teacher, coflow for an SI one (schema.InjectionConfig)
    "inject_merge": "scale",  # or "mixer": a 1×1 convolution over [x, features]
    # feature dropout, cosine from max to min over the trial's epochs (its reports); 0/0 = off
    "feature_drop_max": 0.0,
    "feature_drop_min": 0.0,
    "feature_drop_mode": "all_or_none",  # or "per_channel"
    # ablation controls (fixed while tuning): scales frozen, another sample's features, ∫μ as input
    "feature_scale_trainable": True,
    "shuffle_features": False,
    "atten_channel": False,
}

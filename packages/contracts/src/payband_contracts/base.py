"""The base of every contract model."""

from pydantic import BaseModel, ConfigDict


class ContractModel(BaseModel):
    """Unknown fields are rejected, not ignored; a validated message cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

"""payband_contracts stays a light schema package: importing it and its schema modules loads
neither SQLAlchemy (the ``tracking`` extra) nor typer (the command line)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import payband_contracts

# The modules that need them, imported only by who asks for them.
HEAVY_MODULES = {"cli", "cli_support", "tracking"}


def test_the_schema_modules_import_neither_sqlalchemy_nor_typer() -> None:
    modules = sorted(
        f"payband_contracts.{module.name}"
        for module in pkgutil.iter_modules(payband_contracts.__path__)
        if module.name not in HEAVY_MODULES
    )
    assert "payband_contracts.database" in modules
    code = "\n".join(
        [
            "import sys",
            "import payband_contracts",
            *(f"import {module}" for module in modules),
            "print(sorted({name.split('.')[0] for name in sys.modules} & {'sqlalchemy', 'typer'}))",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_the_tracking_check_imports_sqlalchemy_only_when_asked() -> None:
    code = (
        "import sys\n"
        "from payband_contracts.tracking import tracking_problem\n"
        "assert 'sqlalchemy' not in sys.modules\n"
        "assert tracking_problem('/var/lib/mlflow') is None\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "True", done.stderr

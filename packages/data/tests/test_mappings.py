"""The code mappings (dbt seeds) against the contracts' catalogue, the Adult files and census codes.

The catalogue's category descriptions name the Adult values and PUMS codes each category covers;
the seeds must say exactly the same. Every Adult value in the files and every code of the census
code lists must be mapped, and every canonical category must be reachable from both sources.
"""

from __future__ import annotations

import csv
import itertools
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from payband_contracts import FEATURE_CATALOGUE
from payband_contracts.catalogue import FeatureName, FeatureSpec
from payband_data import dbt_generate
from payband_data.sources.adult import ADULT_COLUMNS, ADULT_SPLITS, adult_files, iter_adult_rows
from payband_data.transform import DBT_PROJECT_DIR

SEEDS = DBT_PROJECT_DIR / "seeds"
CATEGORICAL = [spec for spec in FEATURE_CATALOGUE.features if spec.categories is not None]
# The Adult column and the PUMS variable each categorical feature comes from.
ADULT_COLUMN = {
    FeatureName.SEX: "sex",
    FeatureName.RACE: "race",
    FeatureName.EDUCATION: "education",
    FeatureName.MARITAL_STATUS: "marital_status",
    FeatureName.CLASS_OF_WORKER: "workclass",
    FeatureName.OCCUPATION: "occupation",
    FeatureName.BIRTHPLACE: "native_country",
}
PUMS_VARIABLE = {
    FeatureName.SEX: "SEX",
    FeatureName.RACE: "RAC1P",
    FeatureName.EDUCATION: "SCHL",
    FeatureName.MARITAL_STATUS: "MAR",
    FeatureName.CLASS_OF_WORKER: "COW",
    FeatureName.OCCUPATION: "OCCP",
    FeatureName.BIRTHPLACE: "POBP",
}
RANGE_SEEDS = {"OCCP", "POBP"}
# The code domains of the ACS PUMS data dictionary (2018 onwards).
PUMS_DOMAINS = {
    "SEX": range(1, 3),
    "RAC1P": range(1, 10),
    "SCHL": range(1, 25),
    "MAR": range(1, 6),
    "COW": range(1, 10),
}
# POBP: FIPS codes of the 50 states and DC; 3, 7, 14, 43 and 52 are unused.
STATE_FIPS = tuple(code for code in range(1, 57) if code not in (3, 7, 14, 43, 52))
# POBP of US island areas (60-78) and some countries, up to 554 (Oceania / at sea).
POBP_ABROAD_SAMPLE = (60, 66, 69, 72, 78, 100, 110, 207, 210, 303, 312, 364, 427, 501, 554)
# OCCP: the census 2018 occupation codes (ACS PUMS data dictionary, 2018 onwards), without
# 9920 "unemployed, last worked 5 years ago or earlier or never worked", which is no occupation.
CENSUS_OCCP_CODES = (
    10,
    20,
    40,
    51,
    52,
    60,
    101,
    102,
    110,
    120,
    135,
    136,
    137,
    140,
    150,
    160,
    205,
    220,
    230,
    300,
    310,
    335,
    340,
    350,
    360,
    410,
    420,
    425,
    440,
    500,
    510,
    520,
    530,
    540,
    565,
    600,
    630,
    640,
    650,
    700,
    705,
    710,
    725,
    726,
    735,
    750,
    800,
    810,
    820,
    830,
    845,
    850,
    860,
    900,
    910,
    930,
    940,
    960,
    1005,
    1006,
    1007,
    1010,
    1021,
    1022,
    1031,
    1032,
    1050,
    1065,
    1105,
    1106,
    1108,
    1200,
    1220,
    1240,
    1305,
    1306,
    1310,
    1320,
    1340,
    1350,
    1360,
    1400,
    1410,
    1420,
    1430,
    1440,
    1450,
    1460,
    1520,
    1530,
    1541,
    1545,
    1551,
    1555,
    1560,
    1600,
    1610,
    1640,
    1650,
    1700,
    1710,
    1720,
    1745,
    1750,
    1760,
    1800,
    1821,
    1822,
    1825,
    1840,
    1860,
    1900,
    1910,
    1920,
    1935,
    1970,
    1980,
    2001,
    2002,
    2003,
    2004,
    2005,
    2006,
    2011,
    2012,
    2013,
    2014,
    2015,
    2016,
    2025,
    2040,
    2050,
    2060,
    2100,
    2105,
    2145,
    2170,
    2180,
    2205,
    2300,
    2310,
    2320,
    2330,
    2350,
    2360,
    2400,
    2435,
    2440,
    2545,
    2555,
    2600,
    2631,
    2632,
    2633,
    2634,
    2635,
    2636,
    2640,
    2700,
    2710,
    2721,
    2722,
    2723,
    2740,
    2751,
    2752,
    2755,
    2770,
    2805,
    2810,
    2825,
    2830,
    2840,
    2850,
    2861,
    2862,
    2865,
    2905,
    2910,
    2920,
    3000,
    3010,
    3030,
    3040,
    3050,
    3090,
    3100,
    3110,
    3120,
    3140,
    3150,
    3160,
    3200,
    3210,
    3220,
    3230,
    3245,
    3250,
    3255,
    3256,
    3258,
    3261,
    3270,
    3300,
    3310,
    3321,
    3322,
    3323,
    3324,
    3330,
    3401,
    3402,
    3421,
    3422,
    3423,
    3424,
    3430,
    3500,
    3515,
    3520,
    3545,
    3550,
    3601,
    3602,
    3603,
    3605,
    3610,
    3620,
    3630,
    3640,
    3645,
    3646,
    3647,
    3648,
    3649,
    3655,
    3700,
    3710,
    3720,
    3725,
    3740,
    3750,
    3801,
    3802,
    3820,
    3840,
    3870,
    3900,
    3910,
    3930,
    3940,
    3945,
    3946,
    3960,
    4000,
    4010,
    4020,
    4030,
    4040,
    4055,
    4110,
    4120,
    4130,
    4140,
    4150,
    4160,
    4200,
    4210,
    4220,
    4230,
    4240,
    4251,
    4252,
    4255,
    4330,
    4340,
    4350,
    4400,
    4420,
    4435,
    4461,
    4465,
    4500,
    4510,
    4521,
    4522,
    4525,
    4530,
    4540,
    4600,
    4621,
    4622,
    4640,
    4655,
    4700,
    4710,
    4720,
    4740,
    4750,
    4760,
    4800,
    4810,
    4820,
    4830,
    4840,
    4850,
    4900,
    4920,
    4930,
    4940,
    4950,
    4965,
    5000,
    5010,
    5020,
    5040,
    5100,
    5110,
    5120,
    5140,
    5150,
    5160,
    5165,
    5220,
    5230,
    5240,
    5250,
    5260,
    5300,
    5310,
    5320,
    5330,
    5340,
    5350,
    5360,
    5400,
    5410,
    5420,
    5500,
    5510,
    5521,
    5522,
    5530,
    5540,
    5550,
    5560,
    5600,
    5610,
    5630,
    5710,
    5720,
    5730,
    5740,
    5810,
    5820,
    5840,
    5850,
    5860,
    5900,
    5910,
    5920,
    5940,
    6005,
    6010,
    6040,
    6050,
    6115,
    6120,
    6130,
    6200,
    6210,
    6220,
    6230,
    6240,
    6250,
    6260,
    6305,
    6330,
    6355,
    6360,
    6400,
    6410,
    6441,
    6442,
    6460,
    6515,
    6520,
    6530,
    6540,
    6600,
    6660,
    6700,
    6710,
    6720,
    6730,
    6740,
    6750,
    6765,
    6800,
    6825,
    6835,
    6850,
    6950,
    7000,
    7010,
    7020,
    7030,
    7040,
    7100,
    7120,
    7130,
    7140,
    7150,
    7160,
    7200,
    7210,
    7220,
    7240,
    7260,
    7300,
    7315,
    7320,
    7330,
    7340,
    7350,
    7360,
    7410,
    7420,
    7430,
    7510,
    7540,
    7560,
    7610,
    7640,
    7700,
    7720,
    7730,
    7740,
    7750,
    7800,
    7810,
    7830,
    7840,
    7850,
    7855,
    7905,
    7925,
    7950,
    8000,
    8025,
    8030,
    8040,
    8100,
    8130,
    8140,
    8225,
    8250,
    8255,
    8256,
    8300,
    8310,
    8320,
    8335,
    8350,
    8365,
    8450,
    8465,
    8500,
    8510,
    8530,
    8540,
    8555,
    8600,
    8610,
    8620,
    8630,
    8640,
    8650,
    8710,
    8720,
    8730,
    8740,
    8750,
    8760,
    8800,
    8810,
    8830,
    8850,
    8910,
    8920,
    8930,
    8940,
    8950,
    8990,
    9005,
    9030,
    9040,
    9050,
    9110,
    9121,
    9122,
    9130,
    9141,
    9142,
    9150,
    9210,
    9240,
    9265,
    9300,
    9310,
    9350,
    9365,
    9410,
    9415,
    9430,
    9510,
    9570,
    9600,
    9610,
    9620,
    9630,
    9640,
    9645,
    9650,
    9720,
    9760,
    9800,
    9810,
    9825,
    9830,
)


def read_seed(name: str) -> list[dict[str, str]]:
    with (SEEDS / f"{name}.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def pums_ranges(variable: str) -> list[tuple[int, int, str]]:
    """A range seed as (first, last, category) rows."""
    key = variable.lower()
    feature = next(f for f, v in PUMS_VARIABLE.items() if v == variable)
    return [
        (int(row[f"{key}_from"]), int(row[f"{key}_to"]), row[feature.value])
        for row in read_seed(f"pums_{key}")
    ]


def pums_lookup(variable: str, code: int) -> list[str]:
    """Every category a PUMS code maps to (exactly one when the mapping is sound)."""
    if variable in RANGE_SEEDS:
        return [value for first, last, value in pums_ranges(variable) if first <= code <= last]
    feature = next(f for f, v in PUMS_VARIABLE.items() if v == variable)
    rows = read_seed(f"pums_{variable.lower()}")
    return [row[feature.value] for row in rows if int(row["code"]) == code]


def described(feature: FeatureName) -> dict[str, tuple[list[str], list[tuple[int, int | None]]]]:
    """category -> (Adult values, PUMS code ranges) as the catalogue's descriptions state them.

    "Adult 'A', 'B'; PUMS VAR 1-7 (words) and 9." -> (['A', 'B'], [(1, 7), (9, 9)]); an
    Adult part without quoted values ("every other ...") gives []; "60 and above" -> (60, None).
    """
    spec = FEATURE_CATALOGUE[feature]
    result = {}
    for category in spec.categories or ():
        match = re.search(
            r"Adult:? (?P<adult>[^;]*); PUMS (?P<var>\w+) (?P<codes>.*)$", category.description
        )
        assert match, f"{feature}/{category.value}: no 'Adult ...; PUMS ...' in the description"
        assert match["var"] == PUMS_VARIABLE[feature]
        codes = re.sub(r"\([^)]*\)", "", match["codes"])
        ranges: list[tuple[int, int | None]] = []
        if "and above" in codes:
            ranges.append((int(re.findall(r"\d+", codes)[0]), None))
        else:
            for first, last in re.findall(r"(\d+)(?:-(\d+))?", codes):
                ranges.append((int(first), int(last or first)))
        result[category.value] = (re.findall(r"'([^']+)'", match["adult"]), ranges)
    return result


def adult_values(column: str) -> Counter[str]:
    """How often each value of an Adult column occurs in both files ('?' left out)."""
    index = 2 + ADULT_COLUMNS.index(column)
    counts: Counter[str] = Counter()
    for name, path in adult_files().items():
        counts.update(
            str(row[index])
            for row in iter_adult_rows(path, ADULT_SPLITS[name])
            if row[index] != "?"
        )
    return counts


@pytest.mark.parametrize("feature", list(ADULT_COLUMN), ids=str)
def test_adult_seed_maps_every_value_in_the_files_as_described(feature: FeatureName) -> None:
    column = ADULT_COLUMN[feature]
    seed = {row["code"]: row[feature.value] for row in read_seed(f"adult_{column}")}
    assert len(seed) == len(read_seed(f"adult_{column}")), "a code is listed twice"
    in_files = adult_values(column)

    assert set(seed) == set(in_files)
    expected: dict[str, str] = {}
    rest = None
    for value, (adult, _) in described(feature).items():
        if not adult:
            rest = value  # "Adult: every other native-country"
        expected.update(dict.fromkeys(adult, value))
    if rest is not None:
        expected.update({code: rest for code in in_files if code not in expected})
    assert seed == expected


# POBP's state codes are not one range: see the birthplace test.
@pytest.mark.parametrize(
    "feature", [f for f in PUMS_VARIABLE if f != FeatureName.BIRTHPLACE], ids=str
)
def test_pums_seed_follows_the_catalogue_descriptions(feature: FeatureName) -> None:
    variable = PUMS_VARIABLE[feature]
    description = described(feature)
    expected = {
        (first, last, value) for value, (_, ranges) in description.items() for first, last in ranges
    }
    if variable in RANGE_SEEDS:
        assert set(pums_ranges(variable)) == expected
        assert len(pums_ranges(variable)) == len(expected)
    else:
        rows = read_seed(f"pums_{variable.lower()}")
        seed = {int(row["code"]): row[feature.value] for row in rows}
        assert len(seed) == len(rows), "a code is listed twice"
        assert seed == {
            code: value for first, last, value in expected for code in range(first, last + 1)
        }


@pytest.mark.parametrize("variable", list(PUMS_DOMAINS))
def test_every_code_of_a_census_domain_is_mapped_once(variable: str) -> None:
    for code in PUMS_DOMAINS[variable]:
        assert len(pums_lookup(variable, code)) == 1, f"{variable} {code}"
    domain = set(PUMS_DOMAINS[variable])
    rows = read_seed(f"pums_{variable.lower()}")
    assert {int(row["code"]) for row in rows} == domain


def test_every_census_occupation_code_is_in_exactly_one_range() -> None:
    unmapped = [code for code in CENSUS_OCCP_CODES if len(pums_lookup("OCCP", code)) != 1]
    assert unmapped == []
    assert pums_lookup("OCCP", 9920) == []  # no occupation: missing, see stg_pums
    ranges = sorted(pums_ranges("OCCP"))
    for (_, last, _), (first, _, _) in itertools.pairwise(ranges):
        assert last < first, "OCCP ranges overlap"
    assert ranges[0][0] == 10
    assert ranges[-1][1] == 9830


def test_birthplace_states_are_the_united_states_and_the_rest_abroad() -> None:
    description = described(FeatureName.BIRTHPLACE)
    assert description["united_states"][1] == [(1, 56)]
    assert description["abroad"][1] == [(60, None)]
    for code in STATE_FIPS:
        assert pums_lookup("POBP", code) == ["united_states"], code
    for code in (0, 3, 7, 14, 43, 52, 57, 58, 59):
        assert pums_lookup("POBP", code) == [], code
    for code in (*POBP_ABROAD_SAMPLE, *range(60, 556)):
        assert pums_lookup("POBP", code) == ["abroad"], code
    us_rows = [
        (first, last) for first, last, value in pums_ranges("POBP") if value == "united_states"
    ]
    assert sorted(code for first, last in us_rows for code in range(first, last + 1)) == list(
        STATE_FIPS
    )


@pytest.mark.parametrize("spec", CATEGORICAL, ids=lambda spec: str(spec.name))
def test_every_category_is_reachable_from_both_sources(spec: FeatureSpec) -> None:
    adult = {row[spec.name.value] for row in read_seed(f"adult_{ADULT_COLUMN[spec.name]}")}
    variable = PUMS_VARIABLE[spec.name]
    if variable in RANGE_SEEDS:
        pums = {value for _, _, value in pums_ranges(variable)}
    else:
        pums = {row[spec.name.value] for row in read_seed(f"pums_{variable.lower()}")}
    assert adult == set(spec.values)
    assert pums == set(spec.values)


def test_every_seed_has_column_types_and_a_source_tag() -> None:
    config = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())["seeds"]["payband"]
    for path in sorted(SEEDS.glob("*.csv")):
        with path.open(newline="") as file:
            header = next(csv.reader(file))
        seed = config[path.stem]
        assert set(seed["+column_types"]) == set(header), path.name
        if path.stem != "canonical_categories":
            assert seed["+tags"] == [path.stem.split("_", 1)[0]], path.name


def test_generated_dbt_files_match_the_contracts() -> None:
    assert dbt_generate.check() == []
    assert dbt_generate.main(["--check"]) == 0
    rows = read_seed("canonical_categories")
    assert [(row["feature"], row["value"], int(row["rank"])) for row in rows] == [
        (str(spec.name), value, rank)
        for spec in CATEGORICAL
        for rank, value in enumerate(spec.values)
    ]


def test_check_finds_a_stale_generated_file_and_write_fixes_it(tmp_path: Path) -> None:
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    schema = project / dbt_generate.SCHEMA_FILE
    schema.write_text(schema.read_text().replace("max_value: 99", "max_value: 120", 1))
    (project / dbt_generate.CATEGORIES_SEED).unlink()

    assert sorted(dbt_generate.check(project)) == sorted(
        [schema, project / dbt_generate.CATEGORIES_SEED]
    )
    assert sorted(dbt_generate.write(project)) == sorted(
        [schema, project / dbt_generate.CATEGORIES_SEED]
    )
    assert dbt_generate.check(project) == []
    assert schema.read_text().startswith(f"# {dbt_generate.GENERATED_NOTICE}")

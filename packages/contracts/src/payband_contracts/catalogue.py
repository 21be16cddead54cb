"""The canonical candidate's features: their categories and the feature catalogue.

Categories are chosen so that both the UCI Adult codes and the ACS PUMS codes map onto
them without guessing; the mappings themselves live in the data package's dbt seeds. The
catalogue documents every feature once and drives explanations, dbt tests and dashboards.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FeatureName(StrEnum):
    """The features of the canonical candidate."""

    AGE = "age"
    SEX = "sex"
    RACE = "race"
    EDUCATION = "education"
    MARITAL_STATUS = "marital_status"
    CLASS_OF_WORKER = "class_of_worker"
    OCCUPATION = "occupation"
    HOURS_PER_WEEK = "hours_per_week"
    BIRTHPLACE = "birthplace"


class Sex(StrEnum):
    """Sex as recorded by the census (a protected attribute)."""

    FEMALE = "female"
    MALE = "male"


class Race(StrEnum):
    """Race as recorded by the census (a protected attribute)."""

    WHITE = "white"
    BLACK = "black"
    ASIAN_PACIFIC_ISLANDER = "asian_pacific_islander"
    AMERICAN_INDIAN_ALASKA_NATIVE = "american_indian_alaska_native"
    OTHER = "other"


class Education(StrEnum):
    """Highest educational attainment, from lowest to highest (the order is meaningful)."""

    BELOW_GRADE_5 = "below_grade_5"
    GRADES_5_TO_8 = "grades_5_to_8"
    GRADES_9_TO_12_NO_DIPLOMA = "grades_9_to_12_no_diploma"
    HIGH_SCHOOL_GRADUATE = "high_school_graduate"
    SOME_COLLEGE = "some_college"
    ASSOCIATE_DEGREE = "associate_degree"
    BACHELORS_DEGREE = "bachelors_degree"
    MASTERS_DEGREE = "masters_degree"
    PROFESSIONAL_DEGREE = "professional_degree"
    DOCTORATE = "doctorate"

    @property
    def rank(self) -> int:
        """Position in the order of attainment, 0 for the lowest level."""
        return list(Education).index(self)


class MaritalStatus(StrEnum):
    """Marital status."""

    MARRIED = "married"
    WIDOWED = "widowed"
    DIVORCED = "divorced"
    SEPARATED = "separated"
    NEVER_MARRIED = "never_married"


class ClassOfWorker(StrEnum):
    """Kind of employer or employment."""

    PRIVATE = "private"
    SELF_EMPLOYED_NOT_INCORPORATED = "self_employed_not_incorporated"
    SELF_EMPLOYED_INCORPORATED = "self_employed_incorporated"
    FEDERAL_GOVERNMENT = "federal_government"
    STATE_GOVERNMENT = "state_government"
    LOCAL_GOVERNMENT = "local_government"
    WITHOUT_PAY = "without_pay"
    NEVER_WORKED = "never_worked"


class Occupation(StrEnum):
    """Major occupation group."""

    MANAGEMENT_BUSINESS_FINANCIAL = "management_business_financial"
    PROFESSIONAL_TECHNICAL = "professional_technical"
    PROTECTIVE_SERVICE = "protective_service"
    OTHER_SERVICE = "other_service"
    SALES = "sales"
    OFFICE_ADMINISTRATIVE = "office_administrative"
    FARMING_FISHING_FORESTRY = "farming_fishing_forestry"
    CONSTRUCTION_EXTRACTION_REPAIR = "construction_extraction_repair"
    PRODUCTION = "production"
    TRANSPORTATION_MATERIAL_MOVING = "transportation_material_moving"
    MILITARY = "military"


class Birthplace(StrEnum):
    """Whether the person was born in the United States."""

    UNITED_STATES = "united_states"
    ABROAD = "abroad"


AGE_RANGE = (17, 99)
HOURS_PER_WEEK_RANGE = (1, 99)


class CatalogueModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Category(CatalogueModel):
    """One allowed value of a categorical feature."""

    value: str = Field(description="The stable snake_case value used in every message.")
    label: str = Field(description="Human label, used in explanations and dashboards.")
    description: str = Field(description="What the category covers, with its source codes.")


class FeatureSpec(CatalogueModel):
    """One feature of the canonical candidate."""

    name: FeatureName
    label: str = Field(description="Human label, used in explanations and dashboards.")
    description: str
    kind: Literal["integer", "categorical", "ordinal"] = Field(
        description="integer: a count within a range; categorical: unordered values; "
        "ordinal: values whose listed order is meaningful (lowest first)."
    )
    unit: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    categories: tuple[Category, ...] | None = None
    protected: bool = Field(
        default=False,
        description="A protected attribute: measured for fairness, used as a model input "
        "only when training allows it.",
    )

    @property
    def values(self) -> tuple[str, ...]:
        """The allowed values of a categorical or ordinal feature, in catalogue order."""
        return tuple(category.value for category in self.categories or ())

    @property
    def rule(self) -> str:
        """The validation rule in words: the range or the allowed values."""
        if self.categories is not None:
            return "one of: " + ", ".join(self.values)
        return f"integer from {self.minimum} to {self.maximum}"

    def category(self, value: str) -> Category:
        """The category with this value; ValueError naming the allowed values otherwise."""
        for category in self.categories or ():
            if category.value == value:
                return category
        raise ValueError(f"{self.name}: {value!r} is not {self.rule}")

    def display(self, value: str | int) -> str:
        """The value in words, e.g. 'Bachelor's degree' or '40 hours per week'."""
        if self.categories is not None:
            return self.category(str(value)).label
        return f"{value} {self.unit}" if self.unit else str(value)


class FeatureCatalogue(CatalogueModel):
    """Every feature of the canonical candidate, documented once."""

    features: tuple[FeatureSpec, ...]

    def __getitem__(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def names(self) -> tuple[FeatureName, ...]:
        return tuple(spec.name for spec in self.features)

    @property
    def protected(self) -> tuple[FeatureName, ...]:
        return tuple(spec.name for spec in self.features if spec.protected)


def _categories(labels: dict[StrEnum, tuple[str, str]]) -> tuple[Category, ...]:
    return tuple(
        Category(value=member.value, label=label, description=description)
        for member, (label, description) in labels.items()
    )


FEATURE_CATALOGUE = FeatureCatalogue(
    features=(
        FeatureSpec(
            name=FeatureName.AGE,
            label="Age",
            description="Age in completed years. Adult: age; PUMS: AGEP. The training data "
            "keep people over 16; census files top-code the highest ages.",
            kind="integer",
            unit="years",
            minimum=AGE_RANGE[0],
            maximum=AGE_RANGE[1],
        ),
        FeatureSpec(
            name=FeatureName.SEX,
            label="Sex",
            description="Sex as recorded by the census. Adult: sex; PUMS: SEX.",
            kind="categorical",
            protected=True,
            categories=_categories(
                {
                    Sex.FEMALE: ("Female", "Adult 'Female'; PUMS SEX 2."),
                    Sex.MALE: ("Male", "Adult 'Male'; PUMS SEX 1."),
                }
            ),
        ),
        FeatureSpec(
            name=FeatureName.RACE,
            label="Race",
            description="Race as recorded by the census. Adult: race; PUMS: RAC1P.",
            kind="categorical",
            protected=True,
            categories=_categories(
                {
                    Race.WHITE: ("White", "Adult 'White'; PUMS RAC1P 1."),
                    Race.BLACK: ("Black or African American", "Adult 'Black'; PUMS RAC1P 2."),
                    Race.ASIAN_PACIFIC_ISLANDER: (
                        "Asian or Pacific Islander",
                        "Adult 'Asian-Pac-Islander'; PUMS RAC1P 6 (Asian) and 7 (Native "
                        "Hawaiian and other Pacific Islander).",
                    ),
                    Race.AMERICAN_INDIAN_ALASKA_NATIVE: (
                        "American Indian or Alaska Native",
                        "Adult 'Amer-Indian-Eskimo'; PUMS RAC1P 3, 4 and 5.",
                    ),
                    Race.OTHER: (
                        "Other or several races",
                        "Adult 'Other'; PUMS RAC1P 8 (some other race) and 9 (two or more).",
                    ),
                }
            ),
        ),
        FeatureSpec(
            name=FeatureName.EDUCATION,
            label="Education",
            description="Highest educational attainment, lowest level first. Adult: "
            "education; PUMS: SCHL.",
            kind="ordinal",
            categories=_categories(
                {
                    Education.BELOW_GRADE_5: (
                        "Less than 5th grade",
                        "Adult 'Preschool', '1st-4th'; PUMS SCHL 1-7 (no schooling to grade 4).",
                    ),
                    Education.GRADES_5_TO_8: (
                        "5th to 8th grade",
                        "Adult '5th-6th', '7th-8th'; PUMS SCHL 8-11.",
                    ),
                    Education.GRADES_9_TO_12_NO_DIPLOMA: (
                        "9th to 12th grade, no diploma",
                        "Adult '9th', '10th', '11th', '12th'; PUMS SCHL 12-15.",
                    ),
                    Education.HIGH_SCHOOL_GRADUATE: (
                        "High school graduate",
                        "Adult 'HS-grad'; PUMS SCHL 16 (diploma) and 17 (GED or alternative).",
                    ),
                    Education.SOME_COLLEGE: (
                        "Some college, no degree",
                        "Adult 'Some-college'; PUMS SCHL 18 and 19.",
                    ),
                    Education.ASSOCIATE_DEGREE: (
                        "Associate degree",
                        "Adult 'Assoc-voc', 'Assoc-acdm'; PUMS SCHL 20.",
                    ),
                    Education.BACHELORS_DEGREE: (
                        "Bachelor's degree",
                        "Adult 'Bachelors'; PUMS SCHL 21.",
                    ),
                    Education.MASTERS_DEGREE: (
                        "Master's degree",
                        "Adult 'Masters'; PUMS SCHL 22.",
                    ),
                    Education.PROFESSIONAL_DEGREE: (
                        "Professional degree",
                        "Professional degree beyond a bachelor's (e.g. law, medicine). Adult "
                        "'Prof-school'; PUMS SCHL 23.",
                    ),
                    Education.DOCTORATE: (
                        "Doctorate",
                        "Adult 'Doctorate'; PUMS SCHL 24.",
                    ),
                }
            ),
        ),
        FeatureSpec(
            name=FeatureName.MARITAL_STATUS,
            label="Marital status",
            description="Marital status. Adult: marital-status; PUMS: MAR.",
            kind="categorical",
            categories=_categories(
                {
                    MaritalStatus.MARRIED: (
                        "Married",
                        "Adult 'Married-civ-spouse', 'Married-AF-spouse', "
                        "'Married-spouse-absent'; PUMS MAR 1.",
                    ),
                    MaritalStatus.WIDOWED: ("Widowed", "Adult 'Widowed'; PUMS MAR 2."),
                    MaritalStatus.DIVORCED: ("Divorced", "Adult 'Divorced'; PUMS MAR 3."),
                    MaritalStatus.SEPARATED: ("Separated", "Adult 'Separated'; PUMS MAR 4."),
                    MaritalStatus.NEVER_MARRIED: (
                        "Never married",
                        "Adult 'Never-married'; PUMS MAR 5.",
                    ),
                }
            ),
        ),
        FeatureSpec(
            name=FeatureName.CLASS_OF_WORKER,
            label="Class of worker",
            description="Kind of employer or employment. Adult: workclass; PUMS: COW.",
            kind="categorical",
            categories=_categories(
                {
                    ClassOfWorker.PRIVATE: (
                        "Private employer",
                        "Employee of a private company or non-profit. Adult 'Private'; PUMS "
                        "COW 1 and 2.",
                    ),
                    ClassOfWorker.SELF_EMPLOYED_NOT_INCORPORATED: (
                        "Self-employed, not incorporated",
                        "Adult 'Self-emp-not-inc'; PUMS COW 6.",
                    ),
                    ClassOfWorker.SELF_EMPLOYED_INCORPORATED: (
                        "Self-employed, incorporated",
                        "Adult 'Self-emp-inc'; PUMS COW 7.",
                    ),
                    ClassOfWorker.FEDERAL_GOVERNMENT: (
                        "Federal government",
                        "Adult 'Federal-gov'; PUMS COW 5.",
                    ),
                    ClassOfWorker.STATE_GOVERNMENT: (
                        "State government",
                        "Adult 'State-gov'; PUMS COW 4.",
                    ),
                    ClassOfWorker.LOCAL_GOVERNMENT: (
                        "Local government",
                        "Adult 'Local-gov'; PUMS COW 3.",
                    ),
                    ClassOfWorker.WITHOUT_PAY: (
                        "Working without pay",
                        "Unpaid work in a family business or farm. Adult 'Without-pay'; "
                        "PUMS COW 8.",
                    ),
                    ClassOfWorker.NEVER_WORKED: (
                        "Never worked",
                        "Never worked, or last worked five or more years ago. Adult "
                        "'Never-worked'; PUMS COW 9.",
                    ),
                }
            ),
        ),
        FeatureSpec(
            name=FeatureName.OCCUPATION,
            label="Occupation",
            description="Major occupation group of the job. Adult: occupation (1990s census "
            "groups); PUMS: OCCP, by census occupation code range.",
            kind="categorical",
            categories=_categories(
                {
                    Occupation.MANAGEMENT_BUSINESS_FINANCIAL: (
                        "Management, business and financial",
                        "Adult 'Exec-managerial'; PUMS OCCP 0010-0960.",
                    ),
                    Occupation.PROFESSIONAL_TECHNICAL: (
                        "Professional and technical",
                        "Computer, engineering, science, social service, legal, education, "
                        "arts and healthcare practitioner and technician jobs. Adult "
                        "'Prof-specialty', 'Tech-support'; PUMS OCCP 1005-3550.",
                    ),
                    Occupation.PROTECTIVE_SERVICE: (
                        "Protective service",
                        "Adult 'Protective-serv'; PUMS OCCP 3700-3960.",
                    ),
                    Occupation.OTHER_SERVICE: (
                        "Other service",
                        "Healthcare support, food, cleaning, personal care and household "
                        "service. Adult 'Other-service', 'Priv-house-serv'; PUMS OCCP "
                        "3601-3655 and 4000-4655.",
                    ),
                    Occupation.SALES: ("Sales", "Adult 'Sales'; PUMS OCCP 4700-4965."),
                    Occupation.OFFICE_ADMINISTRATIVE: (
                        "Office and administrative support",
                        "Adult 'Adm-clerical'; PUMS OCCP 5000-5940.",
                    ),
                    Occupation.FARMING_FISHING_FORESTRY: (
                        "Farming, fishing and forestry",
                        "Adult 'Farming-fishing'; PUMS OCCP 6005-6130.",
                    ),
                    Occupation.CONSTRUCTION_EXTRACTION_REPAIR: (
                        "Construction, extraction, craft and repair",
                        "Adult 'Craft-repair'; PUMS OCCP 6200-7640.",
                    ),
                    Occupation.PRODUCTION: (
                        "Production and machine operation",
                        "Adult 'Machine-op-inspct'; PUMS OCCP 7700-8990.",
                    ),
                    Occupation.TRANSPORTATION_MATERIAL_MOVING: (
                        "Transportation and material moving",
                        "Including handlers, equipment cleaners and labourers. Adult "
                        "'Transport-moving', 'Handlers-cleaners'; PUMS OCCP 9005-9760.",
                    ),
                    Occupation.MILITARY: (
                        "Military",
                        "Adult 'Armed-Forces'; PUMS OCCP 9800-9830.",
                    ),
                }
            ),
        ),
        FeatureSpec(
            name=FeatureName.HOURS_PER_WEEK,
            label="Hours per week",
            description="Usual hours worked per week. Adult: hours-per-week; PUMS: WKHP.",
            kind="integer",
            unit="hours per week",
            minimum=HOURS_PER_WEEK_RANGE[0],
            maximum=HOURS_PER_WEEK_RANGE[1],
        ),
        FeatureSpec(
            name=FeatureName.BIRTHPLACE,
            label="Birthplace",
            description="Born in the United States (the 50 states or the District of "
            "Columbia) or elsewhere. Adult: native-country; PUMS: POBP.",
            kind="categorical",
            categories=_categories(
                {
                    Birthplace.UNITED_STATES: (
                        "United States",
                        "Adult 'United-States'; PUMS POBP 1-56.",
                    ),
                    Birthplace.ABROAD: (
                        "Abroad",
                        "Any other country or US territory (Puerto Rico, Guam and the other "
                        "outlying areas). Adult: every other native-country; PUMS POBP 60 and "
                        "above.",
                    ),
                }
            ),
        ),
    )
)

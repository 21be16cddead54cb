-- ACS PUMS persons as loaded (already folktables-filtered), one row per person, census
-- variables renamed. OCCP 9920 ("unemployed, last worked 5 years ago or earlier or never
-- worked") names no occupation, so it counts as missing, like a blank OCCP.
select
    record_id,
    year as survey_year,
    serialno as serial_number,
    sporder as person_number,
    st as state_code,
    agep as age,
    cow as class_of_worker_code,
    schl as education_code,
    mar as marital_status_code,
    nullif(occp, 9920) as occupation_code,
    rac1p as race_code,
    sex as sex_code,
    pobp as birthplace_code,
    wkhp as hours_per_week,
    wagp as wage_usd,
    pincp as income_usd,
    pwgtp as person_weight,
    dataset_uri,
    loaded_at
from {{ source('raw', 'pums') }}

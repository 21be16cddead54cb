-- UCI Adult as loaded, one row per record: '?' (unknown) becomes null and the test file's
-- labels lose their trailing '.', so both splits say '<=50K' or '>50K'.
select
    record_id,
    split,
    line_number,
    age,
    nullif(workclass, '?') as workclass,
    fnlwgt,
    nullif(education, '?') as education,
    education_num,
    nullif(marital_status, '?') as marital_status,
    nullif(occupation, '?') as occupation,
    nullif(relationship, '?') as relationship,
    nullif(race, '?') as race,
    nullif(sex, '?') as sex,
    capital_gain,
    capital_loss,
    hours_per_week,
    nullif(native_country, '?') as native_country,
    rtrim(income, '.') as income,
    dataset_uri,
    loaded_at
from {{ source('raw', 'adult') }}

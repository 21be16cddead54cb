{#- The canonical candidates of one source (var `source`), every code mapped through the seeds.
    The documented filter: a record with a missing value in any feature is left out (Adult
    '?', PUMS blank or OCCP 9920), and so is a PUMS record without wages. Codes that are
    present but unmapped are not filtered here: the every_code_mapped tests on the staging
    models fail on them, and not_null on the mapped columns would catch any that slip by. -#}
{{ check_build_vars() }}
-- depends_on: {{ ref('stg_adult') }}
-- depends_on: {{ ref('stg_pums') }}
{%- if var('source') == 'adult' %}
with records as (
    select *
    from {{ ref('stg_adult') }}
    where age is not null
      and sex is not null
      and race is not null
      and education is not null
      and marital_status is not null
      and workclass is not null
      and occupation is not null
      and hours_per_week is not null
      and native_country is not null
)

select
    records.record_id,
    'adult' as source,
    records.age,
    sex.sex,
    race.race,
    education.education,
    marital_status.marital_status,
    workclass.class_of_worker,
    occupation.occupation,
    records.hours_per_week,
    native_country.birthplace,
    null::integer as wage_usd,
    case records.income when '>50K' then true when '<=50K' then false end as income_over_50k,
    records.dataset_uri
from records
left join {{ ref('adult_sex') }} as sex on sex.code = records.sex
left join {{ ref('adult_race') }} as race on race.code = records.race
left join {{ ref('adult_education') }} as education on education.code = records.education
left join {{ ref('adult_marital_status') }} as marital_status
    on marital_status.code = records.marital_status
left join {{ ref('adult_workclass') }} as workclass on workclass.code = records.workclass
left join {{ ref('adult_occupation') }} as occupation on occupation.code = records.occupation
left join {{ ref('adult_native_country') }} as native_country
    on native_country.code = records.native_country
{%- else %}
with records as (
    select *
    from {{ ref('stg_pums') }}
    where age is not null
      and sex_code is not null
      and race_code is not null
      and education_code is not null
      and marital_status_code is not null
      and class_of_worker_code is not null
      and occupation_code is not null
      and hours_per_week is not null
      and birthplace_code is not null
      and wage_usd is not null
)

select
    records.record_id,
    'pums' as source,
    records.age,
    sex.sex,
    race.race,
    education.education,
    marital_status.marital_status,
    class_of_worker.class_of_worker,
    occupation.occupation,
    records.hours_per_week,
    birthplace.birthplace,
    records.wage_usd,
    null::boolean as income_over_50k,
    records.dataset_uri
from records
left join {{ ref('pums_sex') }} as sex on sex.code = records.sex_code
left join {{ ref('pums_rac1p') }} as race on race.code = records.race_code
left join {{ ref('pums_schl') }} as education on education.code = records.education_code
left join {{ ref('pums_mar') }} as marital_status
    on marital_status.code = records.marital_status_code
left join {{ ref('pums_cow') }} as class_of_worker
    on class_of_worker.code = records.class_of_worker_code
left join {{ ref('pums_occp') }} as occupation
    on records.occupation_code between occupation.occp_from and occupation.occp_to
left join {{ ref('pums_pobp') }} as birthplace
    on records.birthplace_code between birthplace.pobp_from and birthplace.pobp_to
{%- endif %}

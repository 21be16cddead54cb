{#- What training reads: the canonical features and the salary band of each candidate.
    PUMS: the band of the wage under var `band_edges` (an edge belongs to the lower band).
    Adult: the census label, band 1 for '>50K', which only the edges [50000] describe. -#}
{{ check_build_vars() }}
with banded as (
    select
        *,
        {%- if var('source') == 'adult' %}
        case income_over_50k when true then 1 when false then 0 end as band
        {%- else %}
        {{ band_index('wage_usd', var('band_edges')) }} as band
        {%- endif %}
    from {{ ref('int_candidates') }}
)

select
    record_id,
    source,
    age,
    sex,
    race,
    education,
    marital_status,
    class_of_worker,
    occupation,
    hours_per_week,
    birthplace,
    band,
    {{ band_label('band', band_labels()) }} as band_label,
    dataset_uri
from banded

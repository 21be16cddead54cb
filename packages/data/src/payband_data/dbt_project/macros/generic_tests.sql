{#- Generic tests of the payband project. Each returns the offending rows (or codes). -#}

{#- Integers within an inclusive range; nulls are not_null's business. -#}
{% test in_range(model, column_name, min_value, max_value) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} < {{ min_value }} or {{ column_name }} > {{ max_value }}
{% endtest %}

{#- Every source code present in the column has a row in the mapping seed: a code the census
    adds later fails here instead of silently dropping its records. With `to_column` the seed
    holds ranges [column, to_column]; otherwise codes in `code_column`. -#}
{% test every_code_mapped(model, column_name, mapping, code_column='code', to_column=none) %}
select distinct m.{{ column_name }} as unmapped_code
from {{ model }} as m
where m.{{ column_name }} is not null
  and not exists (
    select 1 from {{ mapping }} as s
    {%- if to_column %}
    where m.{{ column_name }} between s.{{ code_column }} and s.{{ to_column }}
    {%- else %}
    where s.{{ code_column }} = m.{{ column_name }}
    {%- endif %}
  )
{% endtest %}

{#- Code ranges of a mapping seed are disjoint and well-formed, so each code maps once. -#}
{% test ranges_do_not_overlap(model, column_name, to_column) %}
select a.{{ column_name }}, a.{{ to_column }}
from {{ model }} as a
where a.{{ to_column }} < a.{{ column_name }}
   or exists (
    select 1 from {{ model }} as b
    where (b.{{ column_name }}, b.{{ to_column }}) <> (a.{{ column_name }}, a.{{ to_column }})
      and b.{{ column_name }} <= a.{{ to_column }}
      and a.{{ column_name }} <= b.{{ to_column }}
  )
{% endtest %}

{#- Values are categories of `feature` in the canonical_categories seed (payband_contracts). -#}
{% test in_categories(model, column_name, feature) %}
select m.{{ column_name }}
from {{ model }} as m
where m.{{ column_name }} is not null
  and not exists (
    select 1 from {{ ref('canonical_categories') }} as c
    where c.feature = {{ sql_text(feature) }} and c.value = m.{{ column_name }}
  )
{% endtest %}

{#- Band indexes run from 0 to the number of edges (var band_edges). -#}
{% test valid_band(model, column_name) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} < 0 or {{ column_name }} > {{ var('band_edges') | length }}
{% endtest %}

{#- Each band label is the label of the row's band index. -#}
{% test band_label_matches(model, column_name, band_column='band') %}
select {{ band_column }}, {{ column_name }}
from {{ model }}
where {{ column_name }} is distinct from ({{ band_label(band_column, band_labels()) }})
{% endtest %}

{#- A model-level test: the model has at least one row. An empty raw table (or a raw version
    of the other source) would otherwise build an empty features mart with every test passing. -#}
{% test not_empty(model) %}
select {{ sql_text(model.identifier ~ ' has no rows: is raw.' ~ var('source') ~ ' empty?') }} as problem
where not exists (select 1 from {{ model }})
{% endtest %}

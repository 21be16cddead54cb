{#- Salary bands from ascending edges in USD, as payband_contracts.bands.SalaryBands defines
    them: band 0 is the lowest, and an amount equal to an edge belongs to the band below it. -#}
{% macro band_index(amount, edges) -%}
    case
    {%- for edge in edges %}
        when {{ amount }} <= {{ edge }} then {{ loop.index0 }}
    {%- endfor %}
        when {{ amount }} > {{ edges[-1] }} then {{ edges | length }}
    end
{%- endmacro %}

{% macro band_label(index, labels) -%}
    case {{ index }}
    {%- for label in labels %}
        when {{ loop.index0 }} then {{ sql_text(label) }}
    {%- endfor %}
    end
{%- endmacro %}

{#- payband_contracts.bands.format_usd: 50000 -> '50K', 52500 -> '52.5K', 1250000 -> '1.25M'. -#}
{% macro format_usd(amount) -%}
    {%- if amount >= 1000000 -%}
        {{ '%g' | format(amount / 1000000) }}M
    {%- elif amount >= 1000 -%}
        {{ '%g' | format(amount / 1000) }}K
    {%- else -%}
        {{ '%g' | format(amount) }}
    {%- endif -%}
{%- endmacro %}

{#- The labels of the bands of var band_edges, as SalaryBands.labels gives them. When the
    caller passes var band_labels (payband_data.transform does, from payband_contracts),
    check_build_vars requires the two to agree. -#}
{% macro band_labels(edges=none) -%}
    {%- set edges = edges if edges is not none else var('band_edges') -%}
    {%- set labels = ['<=' ~ format_usd(edges[0])] -%}
    {%- for edge in edges[1:] -%}
        {%- do labels.append(format_usd(edges[loop.index0]) ~ '-' ~ format_usd(edge)) -%}
    {%- endfor -%}
    {%- do labels.append('>' ~ format_usd(edges[-1])) -%}
    {{ return(labels) }}
{%- endmacro %}

{#- A SQL string literal, quotes doubled. -#}
{% macro sql_text(value) -%}
    '{{ value | string | replace("'", "''") }}'
{%- endmacro %}

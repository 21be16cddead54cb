{#- Models and seeds land in the schema they name (staging, intermediate, marts, seeds),
    not in "<target schema>_<name>": consumers read marts.features by that name. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}

{#- The vars the candidates and features depend on, checked before any SQL runs. Adult has
    only a yes/no label at 50,000 USD, so any other band edges are impossible for it. The
    optional var band_labels (from payband_contracts) must match the labels computed here. -#}
{% macro check_build_vars() %}
    {%- set source = var('source') -%}
    {%- set edges = var('band_edges') -%}
    {%- set labels = var('band_labels', none) -%}
    {%- if source not in ['adult', 'pums'] -%}
        {{ exceptions.raise_compiler_error(
            "var 'source' must be 'adult' or 'pums', got " ~ tojson(source)) }}
    {%- endif -%}
    {%- if edges is string or edges is not iterable or edges | length == 0 -%}
        {{ exceptions.raise_compiler_error(
            "var 'band_edges' must be a non-empty list of USD amounts, got " ~ tojson(edges)) }}
    {%- endif -%}
    {%- for edge in edges -%}
        {%- if edge is not integer or edge <= 0 -%}
            {{ exceptions.raise_compiler_error(
                "var 'band_edges' must hold positive whole USD amounts, got " ~ tojson(edges)) }}
        {%- endif -%}
        {%- if not loop.first and edge <= loop.previtem -%}
            {{ exceptions.raise_compiler_error(
                "var 'band_edges' must be strictly ascending, got " ~ tojson(edges)) }}
        {%- endif -%}
    {%- endfor -%}
    {%- if source == 'adult' and edges | list != [50000] -%}
        {{ exceptions.raise_compiler_error(
            "source 'adult' supports only band_edges [50000]: UCI Adult records income only as "
            ~ "<=50K or >50K, so the edges " ~ tojson(edges) ~ " cannot be computed from it; "
            ~ "use source 'pums' for other bands") }}
    {%- endif -%}
    {%- if labels is not none and (labels is string or labels | list != band_labels(edges)) -%}
        {{ exceptions.raise_compiler_error(
            "var 'band_labels' " ~ tojson(labels) ~ " does not match the band edges "
            ~ tojson(edges) ~ ", whose labels are " ~ tojson(band_labels(edges))
            ~ " (macros/bands.sql follows payband_contracts.bands; leave band_labels out "
            ~ "to use them)") }}
    {%- endif -%}
{% endmacro %}

//! The compatibility rules, one table row per case (docs/schemas.md names
//! each row's test), and the modes.

use super::*;
use CompatMode::{
    Backward as B, BackwardTransitive as BT, Forward as F, ForwardTransitive as FT, Full as FU,
    FullTransitive as FUT,
};

/// What a case expects.
enum Want {
    /// No finding.
    Compatible,
    /// Exactly these findings, as displayed, in order.
    Findings(&'static [&'static str]),
}
use Want::{Compatible as OK, Findings};

/// One row: name, mode, earlier versions (numbered from 1), new schema,
/// expectation.
type Case = (
    &'static str,
    CompatMode,
    &'static [&'static str],
    &'static str,
    Want,
);

const WHO_B: &str = "new readers reject old data";

/// Parses a schema of a test row.
fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad JSON {s}: {e}"))
}

/// Runs a row and returns the findings as displayed.
fn run_case(mode: CompatMode, earlier: &[&str], new: &str) -> Vec<String> {
    let earlier: Vec<Value> = earlier.iter().map(|s| json(s)).collect();
    let numbered: Vec<(u32, &Value)> = earlier.iter().zip(1..).map(|(v, n)| (n, v)).collect();
    check(mode, &numbered, &json(new))
        .iter()
        .map(ToString::to_string)
        .collect()
}

const CASES: &[Case] = &[
    // ---- modes
    (
        "none_accepts_anything",
        CompatMode::None,
        &[r#"{"type":"integer"}"#],
        r#"{"type":"string","additionalProperties":false}"#,
        OK,
    ),
    (
        "identical_schemas_are_compatible",
        FUT,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string","maxLength":8}},"required":["id"]}"#,
            r#"{"type":"object","properties":{"id":{"type":"string","maxLength":8}},"required":["id"]}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string","maxLength":8}},"required":["id"]}"#,
        OK,
    ),
    ("no_earlier_versions", BT, &[], r#"{"type":"string"}"#, OK),
    // ---- open content model
    (
        "open_add_typed_property_backward",
        B,
        &[r#"{"type":"object","properties":{"id":{"type":"string"}}}"#],
        r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}}}"#,
        Findings(&[
            "version 1: /properties/note: property added to an open content model (old data may already carry it, with any type); new readers reject old data",
        ]),
    ),
    (
        "open_add_typed_property_forward",
        F,
        &[r#"{"type":"object","properties":{"id":{"type":"string"}}}"#],
        r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}}}"#,
        OK,
    ),
    (
        "open_add_untyped_property_backward",
        B,
        &[r#"{"type":"object","properties":{"id":{"type":"string"}}}"#],
        r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"description":"anything"}}}"#,
        OK,
    ),
    (
        "open_remove_property_backward",
        B,
        &[r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}}}"#],
        r#"{"type":"object","properties":{"id":{"type":"string"}}}"#,
        OK,
    ),
    (
        "open_remove_property_forward",
        F,
        &[r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}}}"#],
        r#"{"type":"object","properties":{"id":{"type":"string"}}}"#,
        Findings(&[
            "version 1: /properties/note: property removed from an open content model (new data may still carry it, with any type); old readers reject new data",
        ]),
    ),
    (
        "partial_add_property_covered",
        B,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":{"type":"string"}}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"additionalProperties":{"type":"string"}}"#,
        OK,
    ),
    (
        "partial_add_property_not_covered",
        B,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":{"type":"string"}}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string"},"n":{"type":"integer"}},"additionalProperties":{"type":"string"}}"#,
        Findings(&[
            "version 1: /properties/n/type: string -> integer changes the type; new readers reject old data",
        ]),
    ),
    (
        "partial_reader_additional_schema_added",
        B,
        &[r#"{"type":"object","properties":{"id":{"type":"string"}}}"#],
        r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":{"type":"string"}}"#,
        Findings(&[
            "version 1: /additionalProperties/type: any type -> string narrows the type; new readers reject old data",
        ]),
    ),
    // ---- closed content model
    (
        "closed_add_optional_backward",
        B,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"additionalProperties":false}"#,
        OK,
    ),
    (
        "closed_add_optional_forward",
        F,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"additionalProperties":false}"#,
        Findings(&[
            "version 1: /properties/note: property added to a closed content model; old readers reject new data",
        ]),
    ),
    (
        "closed_add_required_without_default",
        B,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string"}},"required":["id"],"additionalProperties":false}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id","note"],"additionalProperties":false}"#,
        Findings(&[
            "version 1: /required: note became required without a default; new readers reject old data",
        ]),
    ),
    (
        "closed_add_required_with_default",
        B,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string"}},"required":["id"],"additionalProperties":false}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string","default":""}},"required":["id","note"],"additionalProperties":false}"#,
        OK,
    ),
    (
        "required_dropped_backward",
        B,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id","note"],"additionalProperties":false}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id"],"additionalProperties":false}"#,
        OK,
    ),
    (
        "required_dropped_forward",
        F,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id","note"],"additionalProperties":false}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id"],"additionalProperties":false}"#,
        Findings(&[
            "version 1: /required: note is no longer required, and the old schema has no default for it; old readers reject new data",
        ]),
    ),
    (
        "required_dropped_forward_old_default",
        F,
        &[
            r#"{"type":"object","properties":{"note":{"type":"string","default":"-"}},"required":["note"],"additionalProperties":false}"#,
        ],
        r#"{"type":"object","properties":{"note":{"type":"string"}},"additionalProperties":false}"#,
        OK,
    ),
    (
        "closed_remove_property_backward",
        B,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"additionalProperties":false}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
        Findings(&[
            "version 1: /properties/note: property removed from a closed content model; new readers reject old data",
        ]),
    ),
    (
        "closed_remove_property_forward",
        F,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"additionalProperties":false}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
        OK,
    ),
    (
        "close_open_model_full",
        FU,
        &[r#"{"type":"object","properties":{"id":{"type":"string"}}}"#],
        r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
        Findings(&[
            "version 1: /additionalProperties: additionalProperties (none) -> false closes the content model; new readers reject old data",
        ]),
    ),
    (
        "open_closed_model_full",
        FU,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string"}}}"#,
        Findings(&[
            "version 1: /additionalProperties: additionalProperties false -> (none) opens the content model; old readers reject new data",
        ]),
    ),
    // ---- type
    (
        "integer_to_number_backward",
        B,
        &[r#"{"properties":{"total":{"type":"integer"}}}"#],
        r#"{"properties":{"total":{"type":"number"}}}"#,
        OK,
    ),
    (
        "integer_to_number_forward",
        F,
        &[r#"{"properties":{"total":{"type":"integer"}}}"#],
        r#"{"properties":{"total":{"type":"number"}}}"#,
        Findings(&[
            "version 1: /properties/total/type: integer -> number widens the type; old readers reject new data",
        ]),
    ),
    (
        "number_to_integer_backward",
        B,
        &[r#"{"properties":{"total":{"type":"number"}}}"#],
        r#"{"properties":{"total":{"type":"integer"}}}"#,
        Findings(&[
            "version 1: /properties/total/type: number -> integer narrows the type; new readers reject old data",
        ]),
    ),
    (
        "number_to_integer_forward",
        F,
        &[r#"{"properties":{"total":{"type":"number"}}}"#],
        r#"{"properties":{"total":{"type":"integer"}}}"#,
        OK,
    ),
    (
        "type_changed_full",
        FU,
        &[r#"{"properties":{"total":{"type":"integer"}}}"#],
        r#"{"properties":{"total":{"type":"string"}}}"#,
        Findings(&[
            "version 1: /properties/total/type: integer -> string changes the type; new readers reject old data",
            "version 1: /properties/total/type: integer -> string changes the type; old readers reject new data",
        ]),
    ),
    (
        "type_added_to_array_backward",
        B,
        &[r#"{"type":"string"}"#],
        r#"{"type":["string","null"]}"#,
        OK,
    ),
    (
        "type_added_to_array_forward",
        F,
        &[r#"{"type":"string"}"#],
        r#"{"type":["string","null"]}"#,
        Findings(&[
            "version 1: /type: string -> string or null widens the type; old readers reject new data",
        ]),
    ),
    (
        "type_removed_from_array_backward",
        B,
        &[r#"{"type":["string","null"]}"#],
        r#"{"type":"string"}"#,
        Findings(&[
            "version 1: /type: string or null -> string narrows the type; new readers reject old data",
        ]),
    ),
    (
        "type_gates_keywords",
        B,
        &[r#"{"type":"integer"}"#],
        r#"{"type":"string","maxLength":3,"pattern":"^a"}"#,
        Findings(&[
            "version 1: /type: integer -> string changes the type; new readers reject old data",
        ]),
    ),
    // ---- enum / const
    (
        "enum_value_added_backward",
        B,
        &[r#"{"properties":{"status":{"enum":["a","b"]}}}"#],
        r#"{"properties":{"status":{"enum":["a","b","c"]}}}"#,
        OK,
    ),
    (
        "enum_value_added_forward",
        F,
        &[r#"{"properties":{"status":{"enum":["a","b"]}}}"#],
        r#"{"properties":{"status":{"enum":["a","b","c"]}}}"#,
        Findings(&[
            r#"version 1: /properties/status/enum: enum ["a","b"] -> ["a","b","c"] widens the allowed values; old readers reject new data"#,
        ]),
    ),
    (
        "enum_value_removed_backward",
        B,
        &[r#"{"properties":{"status":{"enum":["a","b","c"]}}}"#],
        r#"{"properties":{"status":{"enum":["a","b"]}}}"#,
        Findings(&[
            r#"version 1: /properties/status/enum: enum ["a","b","c"] -> ["a","b"] narrows the allowed values; new readers reject old data"#,
        ]),
    ),
    (
        "enum_value_removed_forward",
        F,
        &[r#"{"properties":{"status":{"enum":["a","b","c"]}}}"#],
        r#"{"properties":{"status":{"enum":["a","b"]}}}"#,
        OK,
    ),
    (
        "enum_added_backward",
        B,
        &[r#"{"type":"string"}"#],
        r#"{"type":"string","enum":["a"]}"#,
        Findings(&[
            r#"version 1: /enum: enum (any value) -> ["a"] narrows the allowed values; new readers reject old data"#,
        ]),
    ),
    (
        "const_to_enum_backward",
        B,
        &[r#"{"const":"a"}"#],
        r#"{"enum":["a","b"]}"#,
        OK,
    ),
    (
        "const_changed_full",
        FU,
        &[r#"{"const":1}"#],
        r#"{"const":2}"#,
        Findings(&[
            "version 1: /const: const [1] -> [2] changes the allowed values; new readers reject old data",
            "version 1: /const: const [1] -> [2] changes the allowed values; old readers reject new data",
        ]),
    ),
    (
        "enum_numbers_compare_by_value",
        FU,
        &[r#"{"enum":[1,2]}"#],
        r#"{"enum":[1.0,2.0]}"#,
        OK,
    ),
    // ---- bounds
    (
        "minimum_tightened_backward",
        B,
        &[r#"{"type":"number","minimum":0}"#],
        r#"{"type":"number","minimum":5}"#,
        Findings(&[
            "version 1: /minimum: minimum 0 -> 5 tightens the bound; new readers reject old data",
        ]),
    ),
    (
        "minimum_loosened_backward",
        B,
        &[r#"{"type":"number","minimum":5}"#],
        r#"{"type":"number","minimum":0}"#,
        OK,
    ),
    (
        "minimum_loosened_forward",
        F,
        &[r#"{"type":"number","minimum":5}"#],
        r#"{"type":"number","minimum":0}"#,
        Findings(&[
            "version 1: /minimum: minimum 5 -> 0 loosens the bound; old readers reject new data",
        ]),
    ),
    (
        "maximum_added_backward",
        B,
        &[r#"{"type":"integer"}"#],
        r#"{"type":"integer","maximum":100}"#,
        Findings(&[
            "version 1: /maximum: maximum (none) -> 100 tightens the bound; new readers reject old data",
        ]),
    ),
    (
        "maximum_removed_forward",
        F,
        &[r#"{"type":"integer","maximum":100}"#],
        r#"{"type":"integer"}"#,
        Findings(&[
            "version 1: /maximum: maximum 100 -> (none) loosens the bound; old readers reject new data",
        ]),
    ),
    (
        "minimum_made_exclusive_backward",
        FU,
        &[r#"{"type":"number","minimum":0}"#],
        r#"{"type":"number","exclusiveMinimum":0}"#,
        Findings(&[
            "version 1: /exclusiveMinimum: exclusiveMinimum (none) -> 0 tightens the bound; new readers reject old data",
        ]),
    ),
    (
        "max_length_tightened_backward",
        B,
        &[r#"{"type":"string","maxLength":10}"#],
        r#"{"type":"string","maxLength":5}"#,
        Findings(&[
            "version 1: /maxLength: maxLength 10 -> 5 tightens the bound; new readers reject old data",
        ]),
    ),
    (
        "max_length_loosened_full",
        FU,
        &[r#"{"type":"string","maxLength":5}"#],
        r#"{"type":"string","maxLength":10}"#,
        Findings(&[
            "version 1: /maxLength: maxLength 5 -> 10 loosens the bound; old readers reject new data",
        ]),
    ),
    (
        "min_length_added_backward",
        B,
        &[r#"{"type":"string"}"#],
        r#"{"type":"string","minLength":1}"#,
        Findings(&[
            "version 1: /minLength: minLength (none) -> 1 tightens the bound; new readers reject old data",
        ]),
    ),
    (
        "min_length_removed_backward",
        B,
        &[r#"{"type":"string","minLength":1}"#],
        r#"{"type":"string"}"#,
        OK,
    ),
    (
        "min_items_tightened_backward",
        B,
        &[r#"{"type":"array","minItems":0}"#],
        r#"{"type":"array","minItems":1}"#,
        Findings(&[
            "version 1: /minItems: minItems 0 -> 1 tightens the bound; new readers reject old data",
        ]),
    ),
    (
        "max_items_loosened_forward",
        F,
        &[r#"{"type":"array","maxItems":3}"#],
        r#"{"type":"array","maxItems":4}"#,
        Findings(&[
            "version 1: /maxItems: maxItems 3 -> 4 loosens the bound; old readers reject new data",
        ]),
    ),
    // ---- items
    (
        "items_type_changed_full",
        FU,
        &[r#"{"type":"array","items":{"type":"integer"}}"#],
        r#"{"type":"array","items":{"type":"string"}}"#,
        Findings(&[
            "version 1: /items/type: integer -> string changes the type; new readers reject old data",
            "version 1: /items/type: integer -> string changes the type; old readers reject new data",
        ]),
    ),
    (
        "items_widened_backward",
        B,
        &[r#"{"type":"array","items":{"type":"integer"}}"#],
        r#"{"type":"array","items":{"type":"number"}}"#,
        OK,
    ),
    (
        "items_added_backward",
        B,
        &[r#"{"type":"array"}"#],
        r#"{"type":"array","items":{"type":"string"}}"#,
        Findings(&[
            "version 1: /items/type: any type -> string narrows the type; new readers reject old data",
        ]),
    ),
    // ---- oneOf / anyOf
    (
        "one_of_branch_added_backward",
        B,
        &[r#"{"oneOf":[{"type":"string"},{"type":"integer"}]}"#],
        r#"{"oneOf":[{"type":"string"},{"type":"integer"},{"type":"null"}]}"#,
        OK,
    ),
    (
        "one_of_branch_added_forward",
        F,
        &[r#"{"oneOf":[{"type":"string"},{"type":"integer"}]}"#],
        r#"{"oneOf":[{"type":"string"},{"type":"integer"},{"type":"null"}]}"#,
        Findings(&[
            "version 1: /oneOf/2: branch added or widened: no old branch accepts it; old readers reject new data",
        ]),
    ),
    (
        "one_of_branch_removed_backward",
        B,
        &[r#"{"oneOf":[{"type":"string"},{"type":"integer"},{"type":"null"}]}"#],
        r#"{"oneOf":[{"type":"string"},{"type":"integer"}]}"#,
        Findings(&[
            "version 1: /oneOf/2: branch removed or narrowed: no new branch accepts it; new readers reject old data",
        ]),
    ),
    (
        "one_of_branch_narrowed_backward",
        B,
        &[r#"{"oneOf":[{"type":"string","maxLength":10},{"type":"integer"}]}"#],
        r#"{"oneOf":[{"type":"string","maxLength":5},{"type":"integer"}]}"#,
        Findings(&[
            "version 1: /oneOf/0: branch removed or narrowed: no new branch accepts it; new readers reject old data",
        ]),
    ),
    (
        "one_of_base_keywords_merged",
        FU,
        &[
            r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}},"oneOf":[{"required":["a"]},{"required":["b"]}]}"#,
        ],
        r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}},"oneOf":[{"required":["a"]},{"required":["b"]}]}"#,
        OK,
    ),
    (
        "any_of_added_backward",
        B,
        &[r#"{"type":"string"}"#],
        r#"{"anyOf":[{"type":"string"},{"type":"null"}]}"#,
        OK,
    ),
    (
        "one_of_added_backward",
        B,
        &[r#"{"type":"string"}"#],
        r#"{"oneOf":[{"type":"integer"},{"type":"null"}]}"#,
        Findings(&[
            "version 1: /oneOf: oneOf added: no new branch accepts the old schema; new readers reject old data",
        ]),
    ),
    (
        "one_of_removed_forward",
        F,
        &[r#"{"oneOf":[{"type":"string"}]}"#],
        r#"{"type":["string","integer"]}"#,
        Findings(&[
            "version 1: /oneOf: oneOf removed: no old branch accepts the new schema; old readers reject new data",
        ]),
    ),
    // ---- $ref
    (
        "ref_def_changed_backward",
        B,
        &[
            r##"{"$defs":{"money":{"type":"number"}},"properties":{"total":{"$ref":"#/$defs/money"}}}"##,
        ],
        r##"{"$defs":{"money":{"type":"integer"}},"properties":{"total":{"$ref":"#/$defs/money"}}}"##,
        Findings(&[
            "version 1: /$defs/money/type: number -> integer narrows the type; new readers reject old data",
        ]),
    ),
    (
        "ref_def_changed_forward",
        F,
        &[
            r##"{"$defs":{"money":{"type":"number"}},"properties":{"total":{"$ref":"#/$defs/money"}}}"##,
        ],
        r##"{"$defs":{"money":{"type":"integer"}},"properties":{"total":{"$ref":"#/$defs/money"}}}"##,
        OK,
    ),
    (
        "ref_replaces_inline_schema",
        FU,
        &[r#"{"properties":{"total":{"type":"integer","minimum":0}}}"#],
        r##"{"definitions":{"count":{"type":"integer","minimum":0}},"properties":{"total":{"$ref":"#/definitions/count"}}}"##,
        OK,
    ),
    (
        "ref_sibling_keyword_applies",
        B,
        &[r##"{"$defs":{"s":{"type":"string"}},"properties":{"id":{"$ref":"#/$defs/s"}}}"##],
        r##"{"$defs":{"s":{"type":"string"}},"properties":{"id":{"$ref":"#/$defs/s","maxLength":4}}}"##,
        Findings(&[
            "version 1: /properties/id/maxLength: maxLength (none) -> 4 tightens the bound; new readers reject old data",
        ]),
    ),
    (
        "recursive_ref_terminates",
        FU,
        &[
            r##"{"$ref":"#/$defs/node","$defs":{"node":{"type":"object","properties":{"value":{"type":"integer"},"next":{"$ref":"#/$defs/node"},"kids":{"type":"array","items":{"$ref":"#"}}}}}}"##,
        ],
        r##"{"$ref":"#/$defs/node","$defs":{"node":{"type":"object","properties":{"value":{"type":"number"},"next":{"$ref":"#/$defs/node"},"kids":{"type":"array","items":{"$ref":"#"}}}}}}"##,
        Findings(&[
            "version 1: /$defs/node/properties/value/type: integer -> number widens the type; old readers reject new data",
        ]),
    ),
    (
        "recursive_ref_in_one_of_terminates",
        FUT,
        &[
            r##"{"$defs":{"t":{"oneOf":[{"type":"null"},{"type":"object","properties":{"l":{"$ref":"#/$defs/t"}}}]}},"$ref":"#/$defs/t"}"##,
        ],
        r##"{"$defs":{"t":{"oneOf":[{"type":"null"},{"type":"object","properties":{"l":{"$ref":"#/$defs/t"}}}]}},"$ref":"#/$defs/t"}"##,
        OK,
    ),
    // ---- boolean schemas
    (
        "true_to_object_backward",
        B,
        &["true"],
        r#"{"type":"object"}"#,
        Findings(&[
            "version 1: /type: any type -> object narrows the type; new readers reject old data",
        ]),
    ),
    (
        "false_writer_backward",
        B,
        &["false"],
        r#"{"type":"string"}"#,
        OK,
    ),
    (
        "schema_became_false_backward",
        B,
        &[r#"{"type":"string"}"#],
        "false",
        Findings(&["version 1: /: schema became false; new readers reject old data"]),
    ),
    (
        "property_schema_false_to_true_forward",
        F,
        &[r#"{"properties":{"x":false}}"#],
        r#"{"properties":{"x":true}}"#,
        Findings(&[
            "version 1: /properties/x: schema was false and now accepts values; old readers reject new data",
        ]),
    ),
    // ---- other keywords
    (
        "unknown_constraint_added_backward",
        B,
        &[r#"{"properties":{"code":{"type":"string"}}}"#],
        r#"{"properties":{"code":{"type":"string","pattern":"^[A-Z]+$"}}}"#,
        Findings(&[
            "version 1: /properties/code/pattern: constraint pattern added; new readers reject old data",
        ]),
    ),
    (
        "unknown_constraint_removed_forward",
        F,
        &[r#"{"properties":{"code":{"type":"string","pattern":"^[A-Z]+$"}}}"#],
        r#"{"properties":{"code":{"type":"string"}}}"#,
        Findings(&[
            "version 1: /properties/code/pattern: constraint pattern removed; old readers reject new data",
        ]),
    ),
    (
        "unknown_constraint_changed_full",
        FU,
        &[r#"{"type":"number","multipleOf":2}"#],
        r#"{"type":"number","multipleOf":4}"#,
        Findings(&[
            "version 1: /multipleOf: constraint multipleOf changed; new readers reject old data",
            "version 1: /multipleOf: constraint multipleOf changed; old readers reject new data",
        ]),
    ),
    (
        "annotations_ignored",
        FU,
        &[
            r#"{"title":"A","description":"x","type":"string","examples":["a"],"default":"a","$comment":"c"}"#,
        ],
        r#"{"title":"B","description":"y","type":"string","examples":["b"],"default":"b","deprecated":true,"$schema":"https://json-schema.org/draft/2020-12/schema"}"#,
        OK,
    ),
    // ---- several findings at once
    (
        "multiple_findings_reported_together",
        B,
        &[
            r#"{"type":"object","properties":{"id":{"type":"string"},"total":{"type":"number"},"tags":{"type":"array","items":{"type":"string"}}},"required":["id"]}"#,
        ],
        r#"{"type":"object","properties":{"id":{"type":"string","maxLength":8},"total":{"type":"integer"},"tags":{"type":"array","items":{"type":"integer"}},"note":{"type":"string"}},"required":["id","total"]}"#,
        Findings(&[
            "version 1: /properties/id/maxLength: maxLength (none) -> 8 tightens the bound; new readers reject old data",
            "version 1: /properties/note: property added to an open content model (old data may already carry it, with any type); new readers reject old data",
            "version 1: /properties/tags/items/type: string -> integer changes the type; new readers reject old data",
            "version 1: /properties/total/type: number -> integer narrows the type; new readers reject old data",
            "version 1: /required: total became required without a default; new readers reject old data",
        ]),
    ),
    // ---- transitive modes: v3 matches v2 but not v1
    (
        "backward_checks_latest_only",
        B,
        &[
            r#"{"type":"string"}"#,
            r#"{"type":"string","maxLength":10}"#,
        ],
        r#"{"type":"string","maxLength":10}"#,
        OK,
    ),
    (
        "backward_transitive_checks_all",
        BT,
        &[
            r#"{"type":"string"}"#,
            r#"{"type":"string","maxLength":10}"#,
        ],
        r#"{"type":"string","maxLength":10}"#,
        Findings(&[
            "version 1: /maxLength: maxLength (none) -> 10 tightens the bound; new readers reject old data",
        ]),
    ),
    (
        "forward_checks_latest_only",
        F,
        &[r#"{"type":"integer"}"#, r#"{"type":"number"}"#],
        r#"{"type":"number"}"#,
        OK,
    ),
    (
        "forward_transitive_checks_all",
        FT,
        &[r#"{"type":"integer"}"#, r#"{"type":"number"}"#],
        r#"{"type":"number"}"#,
        Findings(&[
            "version 1: /type: integer -> number widens the type; old readers reject new data",
        ]),
    ),
    (
        "full_checks_latest_only",
        FU,
        &[r#"{"enum":["a","b","c"]}"#, r#"{"enum":["a","b"]}"#],
        r#"{"enum":["a","b"]}"#,
        OK,
    ),
    (
        "full_transitive_checks_all",
        FUT,
        &[r#"{"enum":["a","b","c"]}"#, r#"{"enum":["a","b"]}"#],
        r#"{"enum":["a","b"]}"#,
        Findings(&[
            r#"version 1: /enum: enum ["a","b","c"] -> ["a","b"] narrows the allowed values; new readers reject old data"#,
        ]),
    ),
    (
        "transitive_reports_every_version",
        BT,
        &[r#"{"type":["string","null"]}"#, r#"{"type":"number"}"#],
        r#"{"type":"string"}"#,
        Findings(&[
            "version 1: /type: string or null -> string narrows the type; new readers reject old data",
            "version 2: /type: number -> string changes the type; new readers reject old data",
        ]),
    ),
    (
        "full_refuses_backward_break",
        FU,
        &[r#"{"type":"number"}"#],
        r#"{"type":"integer"}"#,
        Findings(&[
            "version 1: /type: number -> integer narrows the type; new readers reject old data",
        ]),
    ),
    (
        "full_refuses_forward_break",
        FU,
        &[r#"{"type":"integer"}"#],
        r#"{"type":"number"}"#,
        Findings(&[
            "version 1: /type: integer -> number widens the type; old readers reject new data",
        ]),
    ),
];

#[test]
fn table() {
    let mut failures = Vec::new();
    let mut names = HashSet::new();
    for (name, mode, earlier, new, want) in CASES {
        assert!(names.insert(*name), "duplicate case name {name}");
        let got = run_case(*mode, earlier, new);
        let expected: Vec<String> = match want {
            Want::Compatible => Vec::new(),
            Want::Findings(f) => f.iter().map(ToString::to_string).collect(),
        };
        if got != expected {
            failures.push(format!(
                "{name} ({mode}):\n  expected {expected:#?}\n  got      {got:#?}"
            ));
        }
    }
    assert!(CASES.len() >= 45, "only {} cases", CASES.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_reason_suffix_names_who_breaks() {
    // Every backward finding in the table ends the same way; a guard
    // that the table's strings and the code agree on the wording.
    let old = json(r#"{"type":"number"}"#);
    let new = json(r#"{"type":"integer"}"#);
    let found = backward(&old, &new);
    assert_eq!(found.len(), 1);
    assert!(found[0].reason.ends_with(WHO_B), "{}", found[0].reason);
    assert_eq!(found[0].version, None);
    assert!(forward(&old, &new).is_empty());
}

#[test]
fn display_of_a_finding_list() {
    let v1 = json(
        r#"{"type":"object","additionalProperties":false,
            "properties":{"id":{"type":"string"},"total":{"type":"number"},"note":{"type":"string"}},
            "required":["id"]}"#,
    );
    let v2 = json(
        r#"{"type":"object","additionalProperties":false,
            "properties":{"id":{"type":"string"},"total":{"type":"integer"},"status":{"enum":["new","paid"]}},
            "required":["id","status"]}"#,
    );
    let text: Vec<String> = check(CompatMode::Full, &[(1, &v1)], &v2)
        .iter()
        .map(ToString::to_string)
        .collect();
    insta::assert_snapshot!(text.join("\n"), @r"
    version 1: /properties/total/type: number -> integer narrows the type; new readers reject old data
    version 1: /properties/note: property removed from a closed content model; new readers reject old data
    version 1: /required: status became required without a default; new readers reject old data
    version 1: /properties/status: property added to a closed content model; old readers reject new data
    ");
}

#[test]
fn root_pointer_displays_as_slash() {
    let f = Incompatibility {
        version: None,
        pointer: String::new(),
        reason: "r".into(),
    };
    assert_eq!(f.to_string(), "/: r");
    let f = Incompatibility {
        version: Some(3),
        pointer: "/a~1b".into(),
        reason: "r".into(),
    };
    assert_eq!(f.to_string(), "version 3: /a~1b: r");
}

#[test]
fn property_names_are_escaped_in_pointers() {
    let old = json(r#"{"properties":{"a/b~c":{"type":"number"}}}"#);
    let new = json(r#"{"properties":{"a/b~c":{"type":"integer"}}}"#);
    let found = backward(&old, &new);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].pointer, "/properties/a~1b~0c/type");
}

#[test]
fn mode_names_round_trip() {
    let names = [
        "NONE",
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
    ];
    for (mode, name) in CompatMode::ALL.into_iter().zip(names) {
        assert_eq!(mode.as_str(), name);
        assert_eq!(mode.to_string(), name);
        assert_eq!(CompatMode::parse(name), Some(mode));
        let lower = name.to_lowercase().replace('_', "-");
        assert_eq!(CompatMode::parse(&lower), Some(mode), "{lower}");
    }
    let distinct: HashSet<CompatMode> = CompatMode::ALL.into_iter().collect();
    assert_eq!(distinct.len(), 7);
    assert_eq!(CompatMode::default(), CompatMode::Backward);
    assert_eq!(CompatMode::parse("backwards"), None);
    assert_eq!(CompatMode::parse(""), None);
}

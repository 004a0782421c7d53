#!/usr/bin/env python3
"""Validates JSON documents against a schema of the OCI runtime spec.

usage: oci_validate.py SCHEMA_DIR SCHEMA FILE...

SCHEMA is a file in SCHEMA_DIR (state-schema.json, features-schema.json);
its relative $refs (defs.json, ...) are read from SCHEMA_DIR. Prints
"valid FILE" for each valid document, the first error of an invalid one
on stderr, and exits 1 when any is invalid, 2 when jsonschema is missing.
"""
import json
import os
import sys
import warnings

try:
    import jsonschema
except ImportError:
    print("oci_validate: python3's jsonschema is missing (apt-get install python3-jsonschema)",
          file=sys.stderr)
    sys.exit(2)


def main():
    schema_dir, schema_name, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    schema_dir = os.path.abspath(schema_dir)
    with open(os.path.join(schema_dir, schema_name)) as f:
        schema = json.load(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resolver = jsonschema.RefResolver(base_uri="file://" + schema_dir + "/", referrer=schema)
        validator = jsonschema.Draft4Validator(schema, resolver=resolver)
        bad = 0
        for path in files:
            with open(path) as f:
                doc = json.load(f)
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            if errors:
                bad += 1
                e = errors[0]
                print(f"invalid {path}: {'/'.join(map(str, e.path))}: {e.message}", file=sys.stderr)
            else:
                print(f"valid {path}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

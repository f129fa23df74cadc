"""Schemathesis hooks for tests/integration/test_openapi.py (loaded with SCHEMATHESIS_HOOKS).

The run's deployment is a dev deployment with the `local` KEK and no vault: no AWS credentials,
no Key Vault identity, no outbound host allowed. A schema-valid scheme on `aws-kms` or
`azure-keyvault` is then refused with the deployment's own 500 `misconfigured` (docs/api.md), the
one server error the run accepts, and only there: schemathesis.toml lets `createScheme` answer
500, and this check holds every 500 of it to exactly that case. Every other operation keeps the
built-in `not_a_server_error` check untouched.
"""
import json

import schemathesis

VAULT_PROVIDERS = ("aws-kms", "azure-keyvault")


@schemathesis.check
def server_errors_only_for_an_unconfigured_vault(ctx, response, case):
    if response.status_code < 500:
        return None
    body = case.body if isinstance(case.body, dict) else {}
    kek = body.get("kek") if isinstance(body.get("kek"), dict) else {}
    try:
        code = json.loads(response.content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if (case.operation.definition.raw.get("operationId") == "createScheme" and response.status_code == 500
            and code == "misconfigured" and kek.get("provider") in VAULT_PROVIDERS):
        return None
    raise AssertionError(f"server error {response.status_code} {code!r}: only a scheme on a vault this "
                         f"deployment does not configure may answer 500 misconfigured")

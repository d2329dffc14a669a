"""CEL expressions in resources: compiled at admission (`language`), evaluated in a sandbox (`sandbox`)."""

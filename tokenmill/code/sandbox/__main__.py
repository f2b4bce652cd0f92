"""`python -m tokenmill.code.sandbox`: how generated code runs on this machine."""

from tokenmill.code.sandbox import Limits, isolation, run_tests

iso = isolation()
print(f"interpreter  {iso.python}")
print(f"isolation    {iso.why}")
passed, error = run_tests("def f(x):\n    return x + 1\n", ["assert f(1) == 2"], Limits())
print(f"self-test    {'ok' if passed == 1 else f'FAILED: {error}'}")

"""Runs the openai-SDK suite and ends with a plain `N passed, N failed` line for CI."""

import os
import sys
import unittest

here = os.path.dirname(os.path.abspath(__file__))
suite = unittest.defaultTestLoader.discover(here)
result = unittest.TextTestRunner(verbosity=2).run(suite)
failed = len(result.failures) + len(result.errors)
passed = result.testsRun - failed - len(result.skipped)
if result.testsRun == 0:
    print("no tests ran")
    sys.exit(1)
print(f"openai-sdk: {passed} passed, {failed} failed")
sys.exit(0 if result.wasSuccessful() and not result.skipped else 1)

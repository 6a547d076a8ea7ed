"""Prints which documented commands were executed and which only parsed, when the docs
tests ran (see test_doc_commands.py)."""


def pytest_terminal_summary(terminalreporter):
    from tests.docs import test_doc_commands

    if test_doc_commands.REPORT:
        terminalreporter.section("commands in the docs")
        for line in test_doc_commands.REPORT:
            terminalreporter.write_line(line)

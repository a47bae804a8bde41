"""The mixture file -> validated dataset plans.

``yamlpos`` reads YAML with positions (``yaml.safe_load`` semantics), ``config`` holds the strict
models of a mixture, ``strategy`` and ``filters`` what a dataset entry selects, ``plan`` one
dataset's resolved plan, ``validate`` the whole check and its report.
"""

# What the R test scripts share, sourced by each (they print TAP lines that
# tests/functional/rscript.py reads; a script's exit status is its number of failures):
# - check(name, ok): "ok N - name" or "not ok N - name"; an error while evaluating `ok`
#   is printed and counts as a failure;
# - close_to(a, b, tol): numbers equal within a relative tolerance;
# - must(expr): a ds.* call that has to work; on an error, it and each server's
#   DataSHIELD error are printed and the value is NULL (the checks on it then fail).

failures <- 0
count <- 0

check <- function(name, ok) {
  count <<- count + 1
  ok <- tryCatch(isTRUE(ok), error = function(e) {
    cat("#   error:", conditionMessage(e), "\n")
    FALSE
  })
  if (ok) {
    cat("ok", count, "-", name, "\n")
  } else {
    failures <<- failures + 1
    cat("not ok", count, "-", name, "\n")
  }
}

close_to <- function(a, b, tol = 1e-8) {
  a <- unname(unlist(a))
  b <- unname(unlist(b))
  length(a) == length(b) && all(abs(a - b) <= tol * pmax(1, abs(b)))
}

must <- function(expr) {
  tryCatch(expr, error = function(e) {
    cat("#   error:", conditionMessage(e), "\n")
    errs <- DSI::datashield.errors()
    if (length(errs)) cat("#  ", paste(names(errs), unlist(errs), sep = ": "), sep = "\n#   ")
    NULL
  })
}

# Looking up server-side objects from the names a client transmits as strings.
#
# dsBase evaluates such strings with eval(parse(text = x), envir = parent.frame()).
# We evaluate them in the same environment (the caller's frame: the R global
# environment when the gateway evaluates the call at top level), but only accept
# what a client actually transmits: a name, a `$` chain of names ("D$age",
# "L$D$age"), or a single constant ("2", "-1.5", "TRUE"). Anything else is refused
# before evaluation, so a transmitted string can never run code.

.is_reference <- function(e) {
  if (is.symbol(e)) return(nzchar(as.character(e)))
  if (is.call(e) && identical(e[[1L]], as.name("$")) && length(e) == 3L) {
    return(.is_reference(e[[2L]]) && (is.symbol(e[[3L]]) || is.character(e[[3L]])))
  }
  FALSE
}

.is_constant <- function(e) {
  if ((is.numeric(e) || is.logical(e) || is.character(e)) && length(e) == 1L) return(TRUE)
  if (is.call(e) && length(e) == 2L && (identical(e[[1L]], as.name("-")) ||
                                        identical(e[[1L]], as.name("+")))) {
    return(is.numeric(e[[2L]]) && length(e[[2L]]) == 1L)
  }
  FALSE
}

# Parse `text` into a single reference or constant expression, or stop.
.parse_reference <- function(text, argname = "x", allow_constant = FALSE) {
  if (!is.character(text) || length(text) != 1L || is.na(text) || !nzchar(text)) {
    stop(paste0("FAILED: <", argname, "> must be a character string naming a server-side object"),
         call. = FALSE)
  }
  exprs <- tryCatch(parse(text = text, keep.source = FALSE), error = function(e) NULL)
  ok <- length(exprs) == 1L &&
    (.is_reference(exprs[[1L]]) || (allow_constant && .is_constant(exprs[[1L]])))
  if (!ok) {
    stop(paste0("FAILED: <", argname, "> = '", text,
                "' is not the name of a server-side object"), call. = FALSE)
  }
  exprs[[1L]]
}

# Evaluate a transmitted object name in `envir` (pass parent.frame() of the
# exported function).
.get_object <- function(text, envir, argname = "x", allow_constant = FALSE) {
  expr <- .parse_reference(text, argname = argname, allow_constant = allow_constant)
  eval(expr, envir = envir)
}

# Phase 1: the aggregate functions every DataSHIELD session uses first.

#' Dimensions of a server-side object (aggregate). `x`: the object's name as a string.
dimDS <- function(x) {
  obj <- .get_object(x, parent.frame(), "x")
  dim(obj)
}

#' Column names of a server-side data frame or matrix (aggregate).
colnamesDS <- function(x) {
  obj <- .get_object(x, parent.frame(), "x")
  colnames(obj)
}

#' Class of a server-side object (aggregate).
classDS <- function(x) {
  obj <- .get_object(x, parent.frame(), "x")
  class(obj)
}

#' Length of a server-side vector or list (aggregate).
lengthDS <- function(x) {
  obj <- .get_object(x, parent.frame(), "x")
  length(obj)
}

#' Mean of a vector (aggregate); `xvect` is the vector itself (e.g. D$age).
#'
#' Refused when the number of valid (non-missing) values is between 1 and
#' nfilter.tab - 1.
meanDS <- function(xvect) {
  nfilter.tab <- .nfilter("nfilter.tab")
  n.missing <- sum(is.na(xvect))
  n.total <- length(xvect)
  n.valid <- n.total - n.missing
  if (n.valid != 0 && n.valid < nfilter.tab) {
    stop("FAILED: Nvalid less than nfilter.tab", call. = FALSE)
  }
  list(EstimatedMean = mean(xvect, na.rm = TRUE), Nmissing = n.missing,
       Nvalid = n.valid, Ntotal = n.total, ValidityMessage = "VALID ANALYSIS")
}

#' Combine values into a vector (assign; the `c` method maps here as in dsBase).
#'
#' Only allowed under the 'permissive' or 'banana' privacy control level.
vectorDS <- function(...) {
  .checkPrivacyControlLevel(c("permissive", "banana"))
  c(...)
}

#' Concatenate objects (assign): what dsBaseClient's ds.c sends, `cDS(list(...))`.
#'
#' As dsBase 6.3.3: only under the 'permissive' or 'avocado' privacy control level (so
#' blocked at the default 'banana'), and a result shorter than nfilter.tab comes back
#' as missing values.
cDS <- function(objs) {
  .checkPrivacyControlLevel(c("permissive", "avocado"))
  x <- unlist(objs)
  if (length(x) < getDisclosureSetting("nfilter.tab")) {
    x <- if (length(x) == 0) c() else rep(NA, length(x))
  }
  x
}

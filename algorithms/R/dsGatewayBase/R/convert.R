# Type conversions: asNumericDS, asFactorDS1, asFactorDS2.

#' Convert a server-side object to numeric (assign); `x.name` is its name.
#'
#' Factors and character vectors whose values are all made of digits convert by
#' value ("12" -> 12); otherwise they convert to their factor codes. Anything
#' else goes through as.numeric().
asNumericDS <- function(x.name) {
  if (!is.character(x.name)) {
    stop("ERROR: x.name must be specified as a character string", call. = FALSE)
  }
  x <- .get_object(x.name, parent.frame(), "x.name")
  if (is.factor(x) || is.character(x)) {
    digits.only <- !grepl("\\D", as.character(x))
    if (all(digits.only)) {
      return(as.numeric(as.character(x)))
    }
    return(as.numeric(as.factor(x)))
  }
  as.numeric(x)
}

#' Levels a variable would have as a factor (aggregate, first step of ds.asFactor).
#'
#' Refused when the number of levels exceeds nfilter.levels.max, or exceeds
#' nfilter.levels.density times the length of the variable.
asFactorDS1 <- function(input.var.name = NULL) {
  levels.max <- .nfilter("nfilter.levels.max")
  density <- .nfilter("nfilter.levels.density")
  x <- .get_object(input.var.name, parent.frame(), "input.var.name")
  lv <- levels(factor(x))
  n.levels <- length(lv)
  max.by.density <- density * length(x)
  if (n.levels > levels.max) {
    stop(paste0("FAILED: this variable has too many levels and may be disclosive. It exceeds ",
                "the max number of levels allowed by nfilter.levels.max: that is ", levels.max,
                ". In this study this variable has ", n.levels, " factor levels"), call. = FALSE)
  }
  if (n.levels > max.by.density) {
    stop(paste0("FAILED: this variable has too many levels and may be disclosive. The number ",
                "of factor levels must not exceed ", density * 100, "% of the length of the ",
                "variable being converted to a factor. The max number of levels in this study ",
                "is therefore ", max.by.density, " but this variable has ", n.levels,
                " factor levels"), call. = FALSE)
  }
  lv
}

#' Make the factor (assign, second step of ds.asFactor).
#'
#' `all.unique.levels.transmit`: the levels of all studies, comma separated.
#' With `fixed.dummy.vars = TRUE` the result is instead a 0/1 matrix with one
#' column "DV<level>" per level, the `baseline.level`-th column left out.
asFactorDS2 <- function(input.var.name = NULL, all.unique.levels.transmit = NULL,
                        fixed.dummy.vars = NULL, baseline.level = NULL) {
  x <- .get_object(input.var.name, parent.frame(), "input.var.name")
  if (is.null(all.unique.levels.transmit)) {
    lv <- levels(factor(x))
  } else {
    lv <- unlist(strsplit(as.character(all.unique.levels.transmit), split = ",", fixed = TRUE))
  }
  if (!isTRUE(as.logical(fixed.dummy.vars))) {
    return(factor(x, levels = lv))
  }
  if (is.null(baseline.level)) baseline.level <- 1
  dummies <- vapply(lv, function(l) as.numeric(x == l), numeric(length(x)))
  dummies <- matrix(dummies, nrow = length(x), ncol = length(lv),
                    dimnames = list(NULL, paste0("DV", lv)))
  keep <- seq_along(lv)
  keep <- keep[keep != baseline.level]
  dummies[, keep]
}

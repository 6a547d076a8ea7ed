# Univariate summaries: varDS, numNaDS, isValidDS, quantileMeanDS and the two
# helpers ds.glm's checks call (isNaDS, checkNegValueDS).

#' Sums for a pooled variance (aggregate); `xvect` is the vector itself.
#'
#' Refused when the number of valid values is between 1 and nfilter.tab - 1.
varDS <- function(xvect) {
  nfilter.tab <- .nfilter("nfilter.tab")
  n.missing <- sum(is.na(xvect))
  n.total <- length(xvect)
  n.valid <- n.total - n.missing
  if (n.valid != 0 && n.valid < nfilter.tab) {
    stop("FAILED: Nvalid less than nfilter.tab", call. = FALSE)
  }
  list(Sum = sum(xvect, na.rm = TRUE), SumOfSquares = sum(xvect^2, na.rm = TRUE),
       Nmissing = n.missing, Nvalid = n.valid, Ntotal = n.total,
       ValidityMessage = "VALID ANALYSIS")
}

#' Number of missing values of a vector (aggregate).
numNaDS <- function(xvect) {
  sum(is.na(xvect))
}

#' Whether an object may be analysed under nfilter.tab (aggregate).
#'
#' Vectors: length 0 or at least nfilter.tab. Factors: no level with a count
#' between 1 and nfilter.tab - 1. Data frames and matrices: 0 rows or at least
#' nfilter.tab rows. Anything else: FALSE.
isValidDS <- function(obj) {
  nfilter.tab <- .nfilter("nfilter.tab")
  cls <- class(obj)
  if (any(c("character", "integer", "logical", "numeric") %in% cls)) {
    n <- length(obj)
    return(!(n > 0 && n < nfilter.tab))
  }
  if ("factor" %in% cls) {
    counts <- tabulate(obj, nbins = nlevels(obj))
    return(!any(counts > 0 & counts < nfilter.tab))
  }
  if (any(c("data.frame", "matrix") %in% cls)) {
    n <- dim(obj)[1]
    return(!(n > 0 && n < nfilter.tab))
  }
  FALSE
}

#' Quantiles (5, 10, 25, 50, 75, 90, 95 %) and mean of a vector (aggregate).
#'
#' NA when isValidDS() says the vector is not valid, or when it has between 1 and
#' nfilter.tab - 1 non-missing values.
quantileMeanDS <- function(xvect) {
  if (!isTRUE(isValidDS(xvect))) return(NA)
  # isValidDS counts missing values too: 2 valid values among 3 would be released as
  # their own quantiles (dsBase does release them)
  n.valid <- sum(!is.na(xvect))
  if (n.valid > 0 && n.valid < .nfilter("nfilter.tab")) return(NA)
  probs <- c(0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
  q <- if ((is.double(xvect) || is.integer(xvect)) && is.null(attributes(xvect))) {
    .quantile7(xvect, probs)
  } else {
    stats::quantile(xvect, probs, na.rm = TRUE, names = FALSE)
  }
  out <- c(q, mean(xvect, na.rm = TRUE))
  names(out) <- c("5%", "10%", "25%", "50%", "75%", "90%", "95%", "Mean")
  out
}

#' TRUE when every element of the vector is missing (aggregate).
isNaDS <- function(xvect) {
  missing <- is.na(xvect)
  sum(missing, na.rm = TRUE) == length(missing)
}

#' TRUE when any element of the vector is negative (aggregate).
checkNegValueDS <- function(weights) {
  length(which(weights < 0)) > 0
}

# stats::quantile(x, probs, na.rm = TRUE, names = FALSE) of type 7 (R's default), with
# the same arithmetic, for a plain numeric vector. quantile() partially sorts at the
# positions floor() and ceiling() of 1 + (n - 1) * probs, but sort() sorts the whole
# vector when asked for more than 10 positions (7 quantiles need up to 14). Here the
# partial sort fixes only the lower positions; the value just above a fixed position
# is the smallest one between it and the next fixed position.
.quantile7 <- function(x, probs) {
  x <- x[!is.na(x)]
  n <- length(x)
  if (n == 0L) return(x[rep(1L, length(probs))])
  index <- 1 + (n - 1) * probs
  lo <- floor(index)
  hi <- ceiling(index)
  fixed <- sort(unique(lo))
  x <- sort.int(x, partial = fixed)
  segment.end <- c(fixed[-1L] - 1L, n)
  x.hi <- x[hi]
  for (k in which(hi > lo & !(hi %in% fixed))) {
    x.hi[k] <- min(x[hi[k]:segment.end[match(lo[k], fixed)]])
  }
  qs <- x[lo]
  i <- which(index > lo & x.hi != qs)
  h <- (index - lo)[i]
  qs[i] <- (1 - h) * qs[i] + h * x.hi[i]
  qs
}

/* The number of elements of an array, as glibc's <array_length.h>.  */
#ifndef ARRAY_LENGTH_H
#define ARRAY_LENGTH_H

#define array_length(var) (sizeof (var) / sizeof ((var)[0]))

#endif
